#!/usr/bin/env python3
"""Writes fuzz/corpus/<target>/ from inputs the tests and fixtures use.

Run from the repository root: python3 fuzz/seed.py. The corpus is committed; run this again
when the tests gain interesting inputs. (The envelope target builds its seeds in code: they
are sealed with the harness's fixed key.)
"""
import json
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"


def write(target, items):
    out = CORPUS / target
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        old.unlink()
    for i, data in enumerate(items):
        if isinstance(data, str):
            data = data.encode()
        (out / f"{i:03}").write_bytes(data)


# route: a method selector byte (0 GET, 1 HEAD, 2 POST, 3 DELETE, 4 PUT), then the path;
# the paths of tests/it/routes.rs.
routes_rs = (ROOT / "tests/it/routes.rs").read_text()
paths = sorted(set(re.findall(r'"(/[^"]*)"', routes_rs)))
write("route", [bytes([sel]) + p.encode() for p in paths for sel in range(5)])

# id: Podman's 25-hex IDs, names, and the refusals of tests/it/routes.rs decoded.
write("id", ["0123456789abcdef012345678", "abc", "my-app--DB_HOST", "café", "db-password",
             "..", ".", ".hidden", "a/b", "a\\b", "a\nb", "\0", "x" * 255, "x" * 256])

# mapping: the mappings the tests store.
mappings = set()
for test in (ROOT / "tests/it").glob("*.rs"):
    mappings.update(re.findall(r'br?#"(\{"provider".*?\})"#', test.read_text()))
mappings.add('{"provider": "systemd-creds", "name": "db", "blob": "AAE=", "payload": "x"}')
mappings.add('{"provider": "x", "n": 1.5e300, "f": -0.0, "a": [1, {"b": null}], "u": "\\ud83d\\ude00"}')
write("mapping", sorted(mappings))

# cache: payload JSON (the target seals it itself), as tests/it/cache.rs writes it.
key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
digest = "8391ce5d8c32d7eef4a4191614765ec4e301bae6042e6dad1c05fcf62ab22ba4"
write("cache", [
    '{"entries":{"%s":"c2VjcmV0"},"hmac_key":"%s","version":2,"written_at":1700000000}' % (digest, key),
    '{"entries":{},"hmac_key":"%s","version":2,"written_at":0}' % key,
    '{"entries":{"3f2a":"dg=="},"version":1,"written_at":1}',
    '{"entries":{"not-a-digest":"AA==","%s":""},"hmac_key":"%s","version":2.0,"written_at":1}' % (digest, key),
])

# config: the example configuration and the snippets of tests/it/config.rs.
config_rs = (ROOT / "tests/it/config.rs").read_text()
# Every string literal that looks like YAML (a key, a colon, a newline).
snippets = [json.loads(s) for s in re.findall(r'("(?:[^"\\]|\\.)*")', config_rs)]
snippets = [s for s in snippets if re.search(r"^[a-z_]+:", s) and "\n" in s]
write("config", [(ROOT / "examples/config.yaml").read_text(), "socket_path: /from/config.sock\n"] + snippets)

# env and quadlet: the reader tests of src/commands/infisical_import.rs, and the quadlets.
import_rs = (ROOT / "src/commands/infisical_import.rs").read_text()
texts = [json.loads(s) for s in re.findall(r'let text = ("(?:[^"\\]|\\.)*");', import_rs)]
write("env", [t for t in texts if "[Container]" not in t] + ['A="x"trailing-secret\n'])
quadlets = [p.read_text() for p in sorted((ROOT / "quadlets").glob("*.container"))]
write("quadlet", [t for t in texts if "[Container]" in t] + quadlets)

# pem: the certificates of the Infisical PKI fixtures.
def strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


pems = set()
for fixture in sorted((ROOT / "tests/fixtures/infisical").glob("7[45]-*.json")):
    for text in strings(json.loads(fixture.read_text())):
        if "-----BEGIN CERTIFICATE-----" in text:
            pems.add(text)
            # Each certificate of a chain alone, too.
            pems.update(re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n?", text, re.S))
write("pem", sorted(pems))
