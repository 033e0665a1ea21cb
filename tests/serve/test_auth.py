"""tfgpt.serve.auth: ``tfgpt serve --api-key-file`` on 127.0.0.1, met with the ``openai`` client and raw HTTP."""

from __future__ import annotations

import openai
import pytest
import requests

from tfgpt.errors import ConfigError
from tfgpt.serve.app import warn_if_exposed
from tfgpt.serve.auth import BearerAuth, read_api_key

from .helpers import start_server

KEY = "tfgpt-test-key-0123456789"


@pytest.fixture(scope="module")
def keyed_server(tiny_export, tmp_path_factory):
    key_file = tmp_path_factory.mktemp("auth") / "key.txt"
    key_file.write_text(f"{KEY}\n")
    with start_server(tiny_export, "--api-key-file", str(key_file)) as base:
        yield base


@pytest.mark.slow
def test_the_key_opens_every_route_but_health_needs_none(keyed_server):
    client = openai.OpenAI(base_url=f"{keyed_server}/v1", api_key=KEY, max_retries=0)
    done = client.completions.create(model="tiny", prompt="To be", max_tokens=4)
    assert done.usage.completion_tokens == 4
    streamed = client.completions.create(model="tiny", prompt="To be", max_tokens=4, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == done.choices[0].text  # greedy: stream = whole
    assert requests.get(f"{keyed_server}/healthz", timeout=10).status_code == 200  # probes need no key
    tf_serving = requests.get(f"{keyed_server}/v1/models/tiny", headers={"Authorization": f"Bearer {KEY}"},
                              timeout=10)
    assert tf_serving.status_code == 200


@pytest.mark.slow
def test_no_key_or_a_wrong_one_is_a_401_in_the_routes_shape(keyed_server):
    wrong = openai.OpenAI(base_url=f"{keyed_server}/v1", api_key=KEY[:-1], max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        wrong.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert e.value.status_code == 401 and e.value.body["code"] == "invalid_api_key"
    bare = requests.post(f"{keyed_server}/v1/models/tiny:predict", json={"instances": [{"prompts": "To be"}]},
                         timeout=10)
    assert (bare.status_code, bare.json(), bare.headers["WWW-Authenticate"]) == (
        401, {"error": "missing API key: send the header 'Authorization: Bearer KEY'"}, "Bearer")


def test_the_comparison_takes_only_the_exact_key():
    guard = BearerAuth(app=None, key=KEY)
    assert guard.allowed(f"Bearer {KEY}".encode()) and guard.allowed(f"bearer  {KEY} ".encode())
    for bad in (b"", b"Bearer", f"Basic {KEY}".encode(), f"Bearer {KEY}x".encode(), f"Bearer {KEY[:-1]}".encode()):
        assert not guard.allowed(bad), bad


def test_key_file_errors_name_the_file(tmp_path):
    (tmp_path / "empty").write_text("\n  \n")
    with pytest.raises(ConfigError, match=f"--api-key-file {tmp_path / 'empty'}: the file is empty"):
        read_api_key(tmp_path / "empty")
    with pytest.raises(ConfigError, match=f"--api-key-file {tmp_path / 'none'}: cannot be read"):
        read_api_key(tmp_path / "none")
    (tmp_path / "k").write_text("  abc  \nsecond line ignored\n")
    assert read_api_key(tmp_path / "k") == "abc"


def test_binding_beyond_loopback_warns(recwarn):
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        warn_if_exposed(host, 8501, has_key=False)
    assert not [w for w in recwarn.list if "reachable" in str(w.message)]
    with pytest.warns(UserWarning, match="serving on 0.0.0.0:8501, reachable from other machines: anyone"):
        warn_if_exposed("0.0.0.0", 8501, has_key=False)
    with pytest.warns(UserWarning, match="requests need the --api-key-file key"):
        warn_if_exposed("192.168.1.5", 8501, has_key=True)
