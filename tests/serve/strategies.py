"""Hypothesis strategies over ``tfgpt serve``'s request schema: TF Serving ``:predict`` bodies and the
OpenAI-compatible ``/v1/completions`` and ``/v1/chat/completions`` bodies.

Half the draws are bodies of valid shapes and types (``GOOD_*``: most reach the model and get a 200); in
the others each field draws valid values and invalid ones:
wrong types, out-of-range and non-finite numbers, lone surrogates, NULs, unknown keys. A drawn request
is ``(path, body)`` with ``body`` a JSON-ready value (``json.dumps`` writes NaN/Infinity as such).
"""

from __future__ import annotations

from hypothesis import strategies as st

#: Characters the draws mix in: NUL, a lone surrogate, a 4-byte emoji, combining marks, BPE-ish text.
ODD = st.sampled_from(["\x00", "\ud800", "\udfff", "😀", "e\u0301", "\n", " ", "<|endoftext|>", "\\", '"'])
TEXT = st.one_of(st.text(max_size=24), st.lists(ODD, max_size=4).map("".join),
                 st.tuples(st.text(max_size=8), ODD).map("".join))
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True), TEXT)
JSON = st.recursive(SCALAR, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                    st.dictionaries(TEXT, inner, max_size=3)), max_leaves=6)

IN_RANGE = st.integers(0, 8)
SMALL_INT = st.one_of(IN_RANGE, IN_RANGE, IN_RANGE, st.integers(-3, 12), st.integers(-(2**40), 2**40),
                      st.sampled_from([2**31 - 1, 2**31, 10**30]))
NUMBER = st.one_of(st.floats(0, 2), st.floats(0, 2), st.floats(0, 2), st.floats(allow_nan=True, allow_infinity=True),
                   st.integers(-5, 5))


def _maybe_wrong(valid: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly ``valid`` values (5 in 6), sometimes any JSON value (a wrong type, null, a nested object...)."""
    return st.one_of(valid, valid, valid, valid, valid, JSON)


SAMPLING = {
    "max_tokens": _maybe_wrong(SMALL_INT),
    "temperature": _maybe_wrong(NUMBER),
    "top_k": _maybe_wrong(SMALL_INT),
    "seed": _maybe_wrong(SMALL_INT),
    "stop": _maybe_wrong(st.one_of(TEXT, st.lists(TEXT, max_size=3), st.lists(TEXT, max_size=6))),
    "stream": _maybe_wrong(st.just(False)),
    "top_p": _maybe_wrong(st.sampled_from([1, 1, 1, 0.5])),
    "n": _maybe_wrong(st.sampled_from([1, 1, 1, 2])),
    "model": _maybe_wrong(st.sampled_from(["tinybpe", "tinybpe", "other"])),
    "user": TEXT,
}
EXTRA = st.dictionaries(TEXT, JSON, max_size=2)
PROMPT = _maybe_wrong(st.one_of(TEXT, st.lists(TEXT, min_size=0, max_size=4)))
MESSAGE = _maybe_wrong(st.fixed_dictionaries({"role": _maybe_wrong(st.sampled_from(["user", "system", "assistant"])),
                                              "content": _maybe_wrong(TEXT)}))
LAST = _maybe_wrong(st.fixed_dictionaries({"role": st.just("user"), "content": _maybe_wrong(TEXT)}))
MESSAGES = st.tuples(st.lists(MESSAGE, max_size=2), LAST).map(lambda pair: [*pair[0], pair[1]])


def _body(required: dict, optional: dict) -> st.SearchStrategy:
    """Objects with some of ``required`` (usually all), some of ``optional``, sometimes extra keys."""
    fields = st.fixed_dictionaries({}, optional={**required, **optional})
    always = st.fixed_dictionaries(required, optional=optional)
    return st.tuples(st.one_of(always, always, always, fields), st.one_of(*[st.just({})] * 4, EXTRA)).map(
        lambda pair: {**pair[1], **pair[0]})


COMPLETION = _body({"prompt": PROMPT}, {**SAMPLING, "max_new_tokens": _maybe_wrong(SMALL_INT)})
CHAT = _body({"messages": _maybe_wrong(MESSAGES)},
             {**SAMPLING, "max_completion_tokens": _maybe_wrong(SMALL_INT)})

PROMPTS_INPUT = _maybe_wrong(st.lists(TEXT, min_size=0, max_size=4))
IDS_INPUT = _maybe_wrong(st.lists(st.lists(st.integers(-2, 450), min_size=0, max_size=6), min_size=0, max_size=3))
SCALARS = {"max_new_tokens": _maybe_wrong(SMALL_INT), "temperature": _maybe_wrong(NUMBER),
           "top_k": _maybe_wrong(SMALL_INT), "seed": _maybe_wrong(SMALL_INT)}
SIGNATURE = _maybe_wrong(st.sampled_from(["serving_default", "complete", "logits", "generate_ids", "nope"]))


@st.composite
def predict_bodies(draw: st.DrawFn) -> dict:
    """A TF Serving ``:predict`` body: columnar ``inputs`` or row ``instances``, named or unnamed."""
    signature = draw(st.one_of(st.none(), st.none(), SIGNATURE))
    ids = signature in ("logits", "generate_ids")
    first = ("ids", IDS_INPUT) if ids else ("prompts", PROMPTS_INPUT)
    named = draw(st.fixed_dictionaries({first[0]: first[1]}, optional=SCALARS))
    body: dict = {} if signature is None else {"signature_name": signature}
    if draw(st.booleans()):
        body["inputs"] = draw(st.one_of(st.just(named), first[1], JSON))
    else:
        values = named[first[0]] if isinstance(named[first[0]], list) else [named[first[0]]]
        rows = [{first[0]: v, **{k: named[k] for k in named if k != first[0]}} for v in values]
        body["instances"] = draw(st.one_of(st.just(rows), st.just(values), JSON))
    return {**draw(st.one_of(*[st.just({})] * 4, EXTRA)), **body}


GOOD_SAMPLING = {"max_tokens": IN_RANGE, "temperature": st.floats(0, 2), "top_k": IN_RANGE, "seed": IN_RANGE,
                 "stop": st.lists(TEXT, max_size=3), "stream": st.booleans(), "model": st.just("tinybpe")}
#: Bodies of the schema's valid shapes and types (the text may still be odd: NULs, lone surrogates, "").
GOOD_COMPLETION = st.fixed_dictionaries({"prompt": st.one_of(TEXT, st.lists(TEXT, min_size=1, max_size=3))},
                                        optional=GOOD_SAMPLING)
GOOD_CHAT = st.fixed_dictionaries({"messages": st.lists(st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "developer"]), "content": TEXT}), max_size=2).flatmap(
    lambda head: TEXT.map(lambda text: [*head, {"role": "user", "content": text}]))}, optional=GOOD_SAMPLING)
GOOD_PREDICT = st.fixed_dictionaries({"instances": st.lists(TEXT, min_size=1, max_size=3)},
                                     optional={"signature_name": st.just("serving_default")})

REQUESTS = st.one_of(st.tuples(st.just("/v1/completions"), GOOD_COMPLETION),
                     st.tuples(st.just("/v1/chat/completions"), GOOD_CHAT),
                     st.tuples(st.just("/v1/models/tinybpe:predict"), GOOD_PREDICT),
                     st.tuples(st.just("/v1/completions"), COMPLETION),
                     st.tuples(st.just("/v1/chat/completions"), CHAT),
                     st.tuples(st.just("/v1/models/tinybpe:predict"), predict_bodies()))
