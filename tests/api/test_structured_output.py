"""Structured output (issue 22): every constraint the API takes holds in the output.

The corpus of tests/data/json_schemas (165 schemas): one greedy and one sampled output each
through response_format json_schema, every one valid under jsonschema with its formats checked;
json_object outputs parse; regexes hold by re.fullmatch, choices by membership, EBNF grammars by
parsers written here. Both endpoints, streaming (the deltas add up to the non-streamed text),
n > 1, every field spelling (OpenAI's response_format, vLLM's structured_outputs and guided_*,
llama.cpp's json_schema and grammar), stop strings and max_tokens still applying. The default
model is tiny and weak: the constraint alone makes its output valid."""
import json
import re

import jsonschema
import pytest

from structured import (MAX_TOKENS, SANITIZED, chat, complete, corpus, patient_post, post, run_all, schema_errors,
                        stream, texts)

CORPUS = corpus()
# a `length` finish cuts a value short: allowed, but only for a few outputs of the whole corpus
MAX_LENGTH_SHARE = 0.02


def test_corpus_size_and_keywords():
    """The corpus covers what clients send (counted, so that trimming it shows here), and each
    schema is a valid 2020-12 schema."""
    for case in CORPUS:
        jsonschema.Draft202012Validator.check_schema(case["schema"])
    text = "\n".join(json.dumps(c["schema"]) for c in CORPUS)
    assert len(CORPUS) >= 150
    for kw in ["minItems", "maxItems", "enum", "const", "anyOf", "oneOf", "$ref", "$defs", "pattern", "minimum",
               "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "prefixItems",
               '"additionalProperties": false', "required", '"null"', "boolean"]:
        assert kw in text, kw
    for fmt in ["date-time", "date", "email", "uuid", "ipv4", "uri", "time", "hostname"]:
        assert f'"format": "{fmt}"' in text, fmt


def test_validator_rejects():
    """schema_errors can fail: raw control characters, missing and extra keys, bad formats."""
    point = {"type": "object", "properties": {"s": {"type": "string", "maxLength": 4}, "d": {"type": "string", "format": "date"},
                                              "t": {"type": "string", "format": "date-time"}},
             "required": ["s"], "additionalProperties": False}
    assert schema_errors(point, '{"s": "ab", "d": "2024-02-29", "t": "2024-01-01T00:00:60.5+01:00"}') is None
    for bad in ['{"s": "a\tb"}', '{"d": "2024-01-01"}', '{"s": "a", "x": 1}', '{"s": "abcde"}', '{"s": "a", "d": "2023-02-29"}',
                '{"s": "a", "t": "2023-01-01 00:00:00"}', '{"s": "a"} x', '{"s": "a"']:
        assert schema_errors(point, bad), bad


def test_json_schema_corpus(server):
    """Each schema greedy and sampled (temperature 1, a seed of its own): every output valid.
    The two requests of a schema go out together, so that one compile serves both."""
    cases = CORPUS[::10] if SANITIZED else CORPUS

    def one(job):
        i, case, mode = job
        sampling = {"temperature": 0} if mode == "greedy" else {"temperature": 1, "seed": 1000 + i}
        body = chat(server, f"Give {case['task']} as JSON.", **sampling, response_format={
            "type": "json_schema", "json_schema": {"name": case["id"].replace("-", "_"), "schema": case["schema"],
                                                   "strict": True}})
        (text, finish), = texts(body)
        return f"{case['id']} ({mode})", text, finish, schema_errors(case["schema"], text) if finish == "stop" else None

    jobs = [(i, case, mode) for i, case in enumerate(cases) for mode in ("greedy", "sampled")]
    results = run_all(one, jobs, workers=16)
    invalid = [(i, t, why) for i, t, f, why in results if f == "stop" and why]
    cut = [(i, t) for i, t, f, _ in results if f == "length"]
    other = [(i, f) for i, _, f, _ in results if f not in ("stop", "length")]
    for i, t in cut:
        print(f"length ({MAX_TOKENS} tokens): {i}: {t[:120]!r}")
    print(f"{len(results)} outputs: {len(results) - len(invalid) - len(cut) - len(other)} valid, "
          f"{len(invalid)} invalid, {len(cut)} cut at max_tokens")
    assert not invalid, "\n".join(f"{i}: {why}\n    {t[:300]!r}" for i, t, why in invalid)
    assert not other, other
    assert len(cut) <= max(1, MAX_LENGTH_SHARE * len(jobs)), f"{len(cut)} of {len(jobs)} cut at max_tokens"


def test_no_raw_control_characters(server):
    """A model that wants control characters still writes valid JSON: logit_bias pushes the tab
    and U+0001 tokens to the top, and every kind of string (free, length-bounded, patterned,
    JSON mode) holds none raw (JSON allows them only escaped)."""
    bias = {str(t): 100 for c in ("\t", "\x01") for t in server.post("/tokenize", {"prompt": c}).json()["tokens"]}
    strings = [{"type": "string"}, {"type": "string", "maxLength": 8}, {"type": "string", "minLength": 2, "maxLength": 6},
               {"type": "string", "pattern": "^[a-z\\t]{1,8}$"}, {"enum": ["a\tb", "c"]}]
    bodies = [chat(server, "Hi", max_tokens=24, temperature=0, logit_bias=bias, guided_json={
        "type": "object", "properties": {"s": schema}, "required": ["s"], "additionalProperties": False})
        for schema in strings]
    bodies.append(chat(server, "Hi", max_tokens=24, temperature=0, logit_bias=bias, response_format={"type": "json_object"}))
    bad = []
    for what, body in zip(strings + ["json_object"], bodies):
        text, finish = texts(body)[0]
        if re.search(r"[\x00-\x1f]", text) or finish == "stop" and schema_errors({}, text):
            bad.append((what, text))
    assert not bad, bad


def test_json_object(server):
    """JSON mode: any JSON object, on both endpoints and through structured_outputs."""
    bodies = [chat(server, "Describe a cat as JSON.", temperature=0, response_format={"type": "json_object"}),
              chat(server, "Describe a dog as JSON.", temperature=1, seed=3, response_format={"type": "json_object"}),
              chat(server, "A car as JSON.", temperature=1, seed=4, structured_outputs={"json_object": True}),
              complete(server, "Here is a small JSON object:", temperature=0, response_format={"type": "json_object"})]
    for body in bodies:
        (text, finish), = texts(body)
        assert finish == "stop", text
        assert isinstance(json.loads(text), dict), text


def test_response_format_text_is_unconstrained(server):
    a = chat(server, "Say hello.", max_tokens=8, temperature=0, response_format={"type": "text"})
    b = chat(server, "Say hello.", max_tokens=8, temperature=0)
    assert texts(a) == texts(b)


REGEXES = [
    ("a US phone number", r"\(\d{3}\) \d{3}-\d{4}"),
    ("today's date", r"\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])"),
    ("an IP address", r"((25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"),
    ("a Python variable name", r"[A-Za-z_][A-Za-z0-9_]{0,15}"),
    ("an email address", r"[a-z]{1,10}\.[a-z]{1,10}@[a-z]{2,10}\.(com|org|net)"),
    ("a hex color", r"#[0-9a-f]{6}"),
    ("a version number", r"(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})"),
    ("a time of day", r"([01]\d|2[0-3]):[0-5]\d"),
    ("a ZIP code", r"\d{5}(-\d{4})?"),
    ("a MAC address", r"([0-9A-F]{2}:){5}[0-9A-F]{2}"),
    ("a price", r"\$\d{1,4}\.\d{2}"),
    ("a random UUID", r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"),
    ("an answer with a reason", r"(Yes|No), because [a-z ]{5,40}\."),
    # longer than the model wants to write: EOS is held off until the twentieth letter
    ("a long word", r"[a-z]{20}"),
]


def test_regexes(server):
    """Each regex greedy through structured_outputs.regex on chat and sampled through guided_regex
    on completions; every output matches the whole regex."""
    def one(i_case):
        i, (task, rx) = i_case
        a = chat(server, f"Write {task}.", max_tokens=64, system=None, temperature=0, structured_outputs={"regex": rx})
        b = complete(server, f"Here is {task}: ", max_tokens=64, temperature=1, seed=i, guided_regex=rx)
        return [(rx, *texts(a)[0]), (rx, *texts(b)[0])]

    regexes = REGEXES[::3] if SANITIZED else REGEXES
    results = [r for pair in run_all(one, list(enumerate(regexes))) for r in pair]
    bad = [(rx, t, f) for rx, t, f in results if f != "stop" or not re.fullmatch(rx, t, re.ASCII)]
    assert not bad, bad


CHOICES = [["positive", "negative", "neutral"],
           ["New York", "New Delhi", "Newark"],  # shared prefixes: no stop before a whole choice
           ["1", "12", "123"],
           ["oui", "non", "peut-être"]]


def test_choices(server):
    def one(i_choices):
        i, choices = i_choices
        a = chat(server, f"Pick one of: {', '.join(choices)}.", max_tokens=16, system=None, temperature=0,
                 structured_outputs={"choice": choices})
        b = chat(server, "Pick one.", max_tokens=16, system=None, temperature=1, seed=i, guided_choice=choices)
        c = complete(server, "My pick:", max_tokens=16, temperature=1, seed=i, guided_choice=choices)
        return [(choices, *texts(body)[0]) for body in (a, b, c)]

    results = [r for trio in run_all(one, list(enumerate(CHOICES))) for r in trio]
    bad = [(ch, t, f) for ch, t, f in results if f != "stop" or t not in ch]
    assert not bad, bad


# --- EBNF grammars, each with a parser of its own language -----------------------------------------

ARITH = r'''
root ::= expr
expr ::= term (ws [-+] ws term){0,3}
term ::= factor (ws [*/] ws factor){0,2}
factor ::= number | "(" inner ")"
inner ::= number (ws [-+*/] ws number){1,3}
number ::= [1-9] [0-9]{0,3} | "0"
ws ::= " "?
'''


def parse_arith(s):
    """Recursive descent over the grammar above; the value (division by zero allowed as inf)."""
    toks = re.findall(r"\d+|[-+*/()]| ", s)
    assert "".join(toks) == s, "stray characters"
    toks = [t for t in toks if t != " "]
    pos = 0

    def take(ok):
        nonlocal pos
        assert pos < len(toks) and ok(toks[pos]), f"unexpected {toks[pos:pos + 1]} at {pos} in {s!r}"
        pos += 1
        return toks[pos - 1]

    def factor(depth):
        if toks[pos:pos + 1] == ["("] and depth == 0:
            take(lambda t: t == "(")
            v = expr(depth + 1)
            take(lambda t: t == ")")
            return v
        t = take(str.isdigit)
        assert t == "0" or not t.startswith("0"), t
        return float(t)

    def term(depth):
        v = factor(depth)
        while toks[pos:pos + 1] in (["*"], ["/"]):
            op, r = take(lambda t: True), factor(depth)
            v = v * r if op == "*" else (v / r if r else float("inf"))
        return v

    def expr(depth):
        v = term(depth)
        while toks[pos:pos + 1] in (["+"], ["-"]):
            op, r = take(lambda t: True), term(depth)
            v = v + r if op == "+" else v - r
        return v

    v = expr(0)
    assert pos == len(toks), f"trailing {toks[pos:]} in {s!r}"
    return v


CSV_ROW = r'''
root ::= field ("," field){2,5}
field ::= [A-Za-z0-9 .]{1,16} | "\"" quoted{0,16} "\""
quoted ::= [^"\n\\] | "\"\""
'''


def parse_csv_row(s):
    """The fields of one CSV row (RFC 4180 quoting); asserts 3 to 6 of them."""
    fields, i = [], 0
    while True:
        if s[i:i + 1] == '"':
            i, field = i + 1, ""
            while True:
                assert i < len(s), "unterminated quote"
                if s[i] == '"' and s[i + 1:i + 2] == '"':
                    field, i = field + '"', i + 2
                elif s[i] == '"':
                    i += 1
                    break
                else:
                    field, i = field + s[i], i + 1
        else:
            m = re.match(r"[A-Za-z0-9 .]+", s[i:])
            assert m, f"empty or bad field at {i} in {s!r}"
            field, i = m.group(), i + m.end()
        fields.append(field)
        if i == len(s):
            break
        assert s[i] == ",", f"expected a comma at {i} in {s!r}"
        i += 1
    assert 3 <= len(fields) <= 6, fields
    return fields


LET = r'''
root ::= stmt ("\n" stmt){0,2}
stmt ::= "let " ident " = " expr ";"
expr ::= operand (" " [-+*] " " operand){0,3}
operand ::= ident | [0-9]{1,3}
ident ::= [a-z] [a-z0-9_]{0,7}
'''


def parse_let(s):
    """Each `let x = a + 1;` statement as (name, expression tokens)."""
    out = []
    for line in s.split("\n"):
        m = re.fullmatch(r"let ([a-z][a-z0-9_]{0,7}) = (.*);", line)
        assert m, line
        toks = m.group(2).split(" ")
        assert len(toks) % 2 == 1 and len(toks) <= 7, toks
        for k, t in enumerate(toks):
            assert re.fullmatch(r"[a-z][a-z0-9_]{0,7}|[0-9]{1,3}" if k % 2 == 0 else r"[-+*]", t), t
        out.append((m.group(1), toks))
    assert 1 <= len(out) <= 3
    return out


# GBNF as llama.cpp writes it (comments, rule names with dashes, character ranges)
YES_NO_GBNF = r'''# an answer and a short reason
root ::= answer ", " reason "."
answer ::= "yes" | "no"
reason ::= [a-z] [a-z ]{2,30}
'''


def parse_yes_no(s):
    assert re.fullmatch(r"(yes|no), [a-z][a-z ]{2,30}\.", s), s
    return s.split(",")[0]


GRAMMARS = [("an arithmetic expression", ARITH, parse_arith),
            ("a CSV row with a few fields", CSV_ROW, parse_csv_row),
            ("a line of code that sets x to 1 + 2", LET, parse_let),
            ("whether the sky is blue", YES_NO_GBNF, parse_yes_no)]


def test_grammars(server):
    """Each grammar through structured_outputs.grammar (chat, greedy), guided_grammar (completions,
    sampled) and llama.cpp's top-level grammar (chat, sampled); every output parses."""
    def one(i_case):
        i, (task, g, _) = i_case
        bodies = [chat(server, f"Write {task}.", max_tokens=96, system=None, temperature=0,
                       structured_outputs={"grammar": g}),
                  complete(server, f"Here is {task}:\n", max_tokens=96, temperature=1, seed=i, guided_grammar=g),
                  chat(server, f"Write {task}.", max_tokens=96, system=None, temperature=1, seed=i, grammar=g)]
        return [texts(b)[0] for b in bodies]

    for (task, _, parse), outs in zip(GRAMMARS, run_all(one, list(enumerate(GRAMMARS)))):
        for text, finish in outs:
            assert finish == "stop", (task, text)
            parse(text)


def test_grammar_parsers_reject():
    """The parsers above can fail: each refuses near misses."""
    for parse, bad in [(parse_arith, "1 + (2 * (3))"), (parse_arith, "01+2"), (parse_arith, "1 +"),
                       (parse_csv_row, 'a,b'), (parse_csv_row, 'a,"b,c'), (parse_csv_row, 'a,b"c,d'),
                       (parse_let, "let x = 1 +;"), (parse_let, "let X = 1;"), (parse_yes_no, "maybe, no.")]:
        with pytest.raises(AssertionError):
            parse(bad)
    assert parse_arith("(1 + 2) * 3") == 9 and parse_csv_row('a,"b ""q""",c') == ["a", 'b "q"', "c"]


# --- every spelling of a constraint, both endpoints, streaming, n > 1 ------------------------------

POINT = {"type": "object", "properties": {"x": {"type": "integer", "minimum": -99, "maximum": 99},
                                          "y": {"type": "integer", "minimum": -99, "maximum": 99},
                                          "label": {"type": "string", "pattern": "^[A-Za-z ]{1,12}$"}},
         "required": ["x", "y", "label"], "additionalProperties": False}
SPELLINGS = {
    "response_format": {"response_format": {"type": "json_schema", "json_schema": {"name": "point", "schema": POINT}}},
    "structured_outputs.json": {"structured_outputs": {"json": POINT}},
    "structured_outputs.json-string": {"structured_outputs": {"json": json.dumps(POINT)}},
    "guided_json": {"guided_json": POINT},
    "guided_json-string": {"guided_json": json.dumps(POINT)},
    "json_schema": {"json_schema": POINT},
}


@pytest.mark.parametrize("spelling", list(SPELLINGS))
@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_json_schema_spellings(server, spelling, endpoint):
    """The same schema through each field, greedy: the same valid output on each endpoint."""
    if endpoint == "chat":
        body = chat(server, "Give a point on a map as JSON.", max_tokens=64, temperature=0, **SPELLINGS[spelling])
    else:
        body = complete(server, "A point on a map as JSON:", max_tokens=64, temperature=0, **SPELLINGS[spelling])
    (text, finish), = texts(body)
    assert finish == "stop" and schema_errors(POINT, text) is None, text
    reference = chat if endpoint == "chat" else complete
    ref = reference(server, "Give a point on a map as JSON." if endpoint == "chat" else "A point on a map as JSON:",
                    max_tokens=64, temperature=0, **SPELLINGS["response_format"])
    assert texts(ref)[0][0] == text


def test_structural_tag(server):
    """vLLM's structured_outputs.structural_tag (XGrammar's format, as a JSON string): the JSON
    between the tags follows its schema."""
    tag = {"type": "structural_tag", "format": {
        "type": "tag", "begin": "<answer>", "end": "</answer>",
        "content": {"type": "json_schema", "json_schema": POINT}}}
    for sampling in ({"temperature": 0}, {"temperature": 1, "seed": 5}):
        (text, finish), = texts(chat(server, "Answer with a point.", max_tokens=64, **sampling,
                                     structured_outputs={"structural_tag": json.dumps(tag)}))
        m = re.fullmatch(r"<answer>(.*)</answer>", text, re.S)
        assert finish == "stop" and m, text
        assert schema_errors(POINT, m.group(1)) is None, text


STREAM_CASES = [
    ("chat", {"messages": [{"role": "user", "content": "A point as JSON."}], "temperature": 0,
              "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": POINT}}}),
    ("chat", {"messages": [{"role": "user", "content": "A phone number."}], "temperature": 1, "seed": 11,
              "structured_outputs": {"regex": REGEXES[0][1]}}),
    ("completions", {"prompt": "A point as JSON:", "temperature": 1, "seed": 12, "guided_json": POINT}),
    ("completions", {"prompt": "Code:\n", "temperature": 0, "guided_grammar": LET}),
]


@pytest.mark.parametrize("case", range(len(STREAM_CASES)))
def test_streaming_equals_non_streamed(server, case):
    endpoint, body = STREAM_CASES[case]
    path = "/v1/chat/completions" if endpoint == "chat" else "/v1/completions"
    body = {"model": server.model_id(), "max_tokens": 96, **body}
    (text, finish), = texts(post(server, path, body))
    assert finish == "stop"
    streamed, finishes = stream(server, path, body)
    assert streamed == {0: text} and finishes == {0: "stop"}


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_n_choices_each_valid(server, endpoint):
    """n = 4 sampled choices: one matcher each, every one valid, not all the same; streamed too."""
    extra = {"n": 4, "temperature": 1, "seed": 21, "max_tokens": 64, "guided_json": POINT}
    if endpoint == "chat":
        path, body = "/v1/chat/completions", {"messages": [{"role": "user", "content": "Points as JSON."}], **extra}
    else:
        path, body = "/v1/completions", {"prompt": "A point as JSON:", **extra}
    body["model"] = server.model_id()
    outs = texts(post(server, path, body))
    assert len(outs) == 4
    for text, finish in outs:
        assert finish == "stop" and schema_errors(POINT, text) is None, text
    assert len({t for t, _ in outs}) > 1
    streamed, finishes = stream(server, path, body)
    assert streamed == {i: t for i, (t, _) in enumerate(outs)} and set(finishes.values()) == {"stop"}


def test_stop_string_still_applies(server):
    """A stop string inside the constrained output ends it there (vLLM's rule: the grammar does
    not hold back a stop string)."""
    for endpoint in (chat, complete):
        body = endpoint(server, "Pick a city.", max_tokens=16, temperature=0, stop=[" "],
                        structured_outputs={"choice": ["New York", "New Delhi"]})
        c = body["choices"][0]
        assert texts(body)[0] == ("New", "stop") and c["stop_reason"] == " "
    # a stop string the grammar forces: the JSON ends right before the second key
    full = texts(chat(server, "A point as JSON.", max_tokens=64, temperature=0, guided_json=POINT))[0][0]
    assert '"y"' in full, full
    text, finish = texts(chat(server, "A point as JSON.", max_tokens=64, temperature=0, stop=['"y"'],
                              guided_json=POINT))[0]
    assert (text, finish) == (full[:full.index('"y"')], "stop")


def test_max_tokens_cuts_a_value_short(server):
    """max_tokens ends a constrained output mid-value with finish_reason length (as OpenAI
    does), on both endpoints, streamed or not; the cut text is a prefix of valid JSON."""
    full = chat(server, "A point as JSON.", max_tokens=64, temperature=0, guided_json=POINT)
    full_text, finish = texts(full)[0]
    assert finish == "stop"
    cut = chat(server, "A point as JSON.", max_tokens=4, temperature=0, guided_json=POINT)
    text, finish = texts(cut)[0]
    assert finish == "length" and cut["usage"]["completion_tokens"] == 4
    assert full_text.startswith(text) and text != full_text
    with pytest.raises(ValueError):
        json.loads(text)
    body = {"model": server.model_id(), "prompt": "A point as JSON:", "max_tokens": 3, "temperature": 0,
            "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": POINT}}}
    streamed, finishes = stream(server, "/v1/completions", body)
    assert finishes == {0: "length"} and streamed[0].startswith("{")


# --- bad input: a 400 naming the field that held it -------------------------------------------------

BAD = [
    ("invalid schema type", {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 12}}}},
     "response_format"),
    ("unknown type name", {"guided_json": {"type": "object", "properties": {"a": {"type": "nosuch"}}}}, "guided_json"),
    ("schema not JSON", {"guided_json": "{not json"}, "guided_json"),
    ("llama.cpp schema", {"json_schema": {"type": 12}}, "json_schema"),
    ("json_schema without schema", {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": 5}}},
     "response_format"),
    ("unknown response_format", {"response_format": {"type": "xml"}}, "response_format"),
    ("invalid regex", {"structured_outputs": {"regex": "("}}, "structured_outputs"),
    ("invalid guided_regex", {"guided_regex": "[a-"}, "guided_regex"),
    ("invalid grammar", {"structured_outputs": {"grammar": 'root ::= "a" undefined_rule'}}, "structured_outputs"),
    ("invalid guided_grammar", {"guided_grammar": 'root ::= ("a"'}, "guided_grammar"),
    ("invalid GBNF", {"grammar": 'root ::= "unterminated'}, "grammar"),
    ("empty choice", {"guided_choice": []}, "guided_choice"),
    ("choice not strings", {"structured_outputs": {"choice": [1, 2]}}, "structured_outputs"),
    ("invalid structural tag", {"structured_outputs": {"structural_tag": '{"type": "structural_tag"}'}},
     "structured_outputs"),
    ("two keys in structured_outputs", {"structured_outputs": {"regex": "a+", "choice": ["a"]}}, "structured_outputs"),
    ("empty structured_outputs", {"structured_outputs": {}}, "structured_outputs"),
    ("two constraints", {"response_format": {"type": "json_object"}, "guided_regex": "a+"},
     ("response_format", "guided_regex")),
    ("two constraints, llama.cpp", {"guided_json": POINT, "grammar": 'root ::= "a"'}, ("guided_json", "grammar")),
]


@pytest.mark.parametrize("case", [b[0] for b in BAD])
@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_bad_constraint_is_400_naming_the_field(server, case, endpoint):
    _, extra, param = next(b for b in BAD if b[0] == case)
    if endpoint == "chat":
        path, body = "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}]}
    else:
        path, body = "/v1/completions", {"prompt": "Hi"}
    r = server.post(path, {"model": server.model_id(), "max_tokens": 4, **body, **extra})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "param", "code"} and err["message"], err
    assert err["type"] == "invalid_request_error", err
    assert err["param"] in ((param,) if isinstance(param, str) else param), err
    # a stream is refused before it starts, with the same error
    r = server.post(path, {"model": server.model_id(), "max_tokens": 4, "stream": True, **body, **extra})
    assert r.status_code == 400 and r.json()["error"]["param"] == err["param"], r.text


# Keywords XGrammar 0.2.8 compiles but does not enforce (it logs a warning, or reads oneOf as anyOf,
# or drops a length bound beside a pattern or format): each schema below must be refused with a
# 400 naming the field, or else honoured by every output.
UNENFORCED = {
    "allOf of two": {"allOf": [{"type": "object", "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 9}},
                                "required": ["a"]},
                               {"type": "object", "properties": {"b": {"type": "string", "maxLength": 5}},
                                "required": ["b"]}]},
    # three unique items out of two values: no output can honour it
    "uniqueItems": {"type": "array", "items": {"enum": ["a", "b"]}, "minItems": 3, "maxItems": 3, "uniqueItems": True},
    "contains": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9}, "minItems": 1,
                 "maxItems": 3, "contains": {"const": 7}},
    "if/then": {"type": "object", "properties": {"k": {"enum": ["x", "y"]}, "n": {"type": "integer", "minimum": 0,
                                                                                "maximum": 9}},
                "required": ["k", "n"], "if": {"properties": {"k": {"const": "x"}}},
                "then": {"properties": {"n": {"const": 5}}}},
    "not": {"enum": ["a", "b", "c"], "not": {"enum": ["a", "b"]}},
    "multipleOf on a number": {"type": "number", "minimum": 0, "maximum": 10, "multipleOf": 0.5},
    "maxLength beside a format": {"type": "string", "format": "email", "maxLength": 8},
    "maxLength beside a pattern": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 4},
}


@pytest.mark.parametrize("case", list(UNENFORCED))
def test_unenforced_keyword_is_refused_or_honoured(server, case):
    schema = UNENFORCED[case]
    rf = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    r = patient_post(server, "/v1/chat/completions", {
        "model": server.model_id(), "max_tokens": 64, "temperature": 0, "response_format": rf,
        "messages": [{"role": "user", "content": "Give a JSON value."}]})
    if r.status_code == 400:
        assert r.json()["error"]["param"] == "response_format", r.text
        return
    assert r.status_code == 200, r.text
    bad = []
    samplings = [{"temperature": 0}] + ([] if SANITIZED else [{"temperature": 1, "seed": 1}, {"temperature": 1, "seed": 2}])
    for sampling in samplings:
        text, finish = texts(chat(server, "Give a JSON value.", max_tokens=64, **sampling, response_format=rf))[0]
        why = schema_errors(schema, text) if finish == "stop" else "cut at max_tokens"
        if why:
            bad.append((sampling, text[:100], why))
    assert not bad, bad


def test_oneof_is_read_as_anyof(server):
    """docs/api.md: oneOf is read as anyOf (as vLLM does), so with overlapping branches an output
    satisfies at least one branch, maybe more; it always satisfies the anyOf reading."""
    branches = [{"type": "integer", "minimum": 0, "maximum": 20}, {"type": "integer", "minimum": 10, "maximum": 30}]
    rf = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"oneOf": branches}}}
    for sampling in [{"temperature": 0}, {"temperature": 1, "seed": 1}, {"temperature": 1, "seed": 2}]:
        text, finish = texts(chat(server, "Give a JSON value.", max_tokens=64, **sampling, response_format=rf))[0]
        assert finish == "stop", text
        assert schema_errors({"anyOf": branches}, text) is None, text


def test_server_serves_after_bad_constraints(server):
    """A burst of refused grammars leaves the engine serving constrained requests."""
    run_all(lambda b: server.post("/v1/completions", {"model": server.model_id(), "prompt": "Hi", "max_tokens": 4,
                                                      **b[1]}), BAD)
    (text, finish), = texts(chat(server, "A point.", max_tokens=64, temperature=0, guided_json=POINT))
    assert finish == "stop" and schema_errors(POINT, text) is None
