"""tfgpt.assets_path: the packaged files are where the helpers say, and are the files their SHA256SUMS name."""

import hashlib

from tfgpt.assets_path import asset_path, gpt2_vocab_dir

GPT2_SHA256 = {
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}


def test_gpt2_vocab_dir_holds_gpt2s_files():
    for name, digest in GPT2_SHA256.items():
        assert hashlib.sha256((gpt2_vocab_dir() / name).read_bytes()).hexdigest() == digest


def test_asset_path_points_inside_the_package():
    corpus = asset_path("corpus", "tinyshakespeare.txt")
    assert corpus.parts[-4:] == ("tfgpt", "assets", "corpus", "tinyshakespeare.txt")
    assert corpus.read_text(encoding="utf-8").startswith("First Citizen:")
