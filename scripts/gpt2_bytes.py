"""GPT-2 byte-level BPE's byte <-> printable character table (the scripts that make golden data)."""


def bytes_to_unicode():
    """{byte: the printable character it is stored as in a byte-level BPE vocabulary}."""
    bs = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def unicode_to_bytes():
    """The inverse: {character: byte}."""
    return {c: b for b, c in bytes_to_unicode().items()}
