"""Extracts the default model's chat template from its GGUF metadata into
tests/data/chat_templates/smollm2-135m-instruct.jinja (byte for byte), once, for the
differential test. Uses the `gguf` package of the reference venv /opt/refvenv, outside the
repository; CI never runs this, the extracted file is checked in. To recreate the venv:

    python3 -m venv /opt/refvenv && /opt/refvenv/bin/pip install -q llama-cpp-python==0.3.16 gguf==0.17.1 numpy

Run: /opt/refvenv/bin/python tests/template/extract_model_template.py
"""
import os
import sys

import gguf

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
OUT = os.path.join(ROOT, "tests", "data", "chat_templates", "smollm2-135m-instruct.jinja")


def main():
    reader = gguf.GGUFReader(sys.argv[1] if len(sys.argv) > 1 else MODEL)
    field = reader.fields["tokenizer.chat_template"]
    text = field.contents()
    with open(OUT, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    print(f"wrote {OUT} ({len(text.encode())} bytes)")


if __name__ == "__main__":
    main()
