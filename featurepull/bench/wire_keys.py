"""A BatchGetItem body's ``Keys`` read without a dict per key, for the bench endpoint.

The reader sends a table's keys as one compact JSON array,
``"Keys":[{"entity_id":{"S":"<id>"}},...]``, botocore as the same with a space after each
``:`` and ``,``. When every id is ASCII letters and digits (Feast's are hex), that array
holds nothing but ids and fixed text: it is cut out of the body in a few C-level passes
and its ids split off as strings. The rest of the body — the
table, the projection, the flags — is the same in request after request, so the endpoint
reads and validates it once (with :data:`KEYS_MARK` where the array was) and keeps what it
found under the two pieces' bytes.

Any other body (other spacing, an escape anywhere, an id of other characters, no such
array) gives None, and the endpoint reads it with ``json.loads`` as before.
"""

from __future__ import annotations

# The array's opening, the text between two ids, its closing: as orjson writes it (the
# reader), and as json.dumps does (botocore, so Feast's online_read).
FORMS = ((b'"Keys":[{"entity_id":{"S":"', '"}},{"entity_id":{"S":"', b'"}}]'),
         (b'"Keys": [{"entity_id": {"S": "', '"}}, {"entity_id": {"S": "', b'"}}]'))
# Stands for the array while the rest is read: a JSON string no body without a backslash
# can hold (a raw control character is not JSON), so where it lands is where the array was.
KEYS_MARK = b'"\\u0000"'
MARK = "\x00"


def split_keys(body: bytes) -> tuple[bytes, bytes, list[str]] | None:
    """``(before, after, ids)``: the body up to the ``Keys`` array's value, the body after
    it, and the ids it holds, in order (``before + b"[...]" + after`` is the body); None when
    no array of that one plain form is there. Whether the array is really the table's
    ``Keys`` is the caller's to check: it reads ``before + KEYS_MARK + after`` and takes
    only a rest without a backslash (no escapes, so every quote there opens or closes a
    string) in which the mark came back as the spec's ``Keys``."""
    for form in FORMS:
        start = body.find(form[0])
        if start >= 0:
            break
    else:
        return None
    opening, between, closing = form
    end = body.rfind(closing)  # the reader's keys come last: a few bytes from the end
    wire = body[start + len(opening):end]
    if end < start + len(opening) or not wire.isascii():
        return None
    ids = wire.decode("ascii").split(between)
    # Ids of letters and digits only: no quote (so the array ends where it seems to, and no
    # other "}}] is before it), no escape and no control character: each id is its JSON text.
    if not "".join(ids).encode().isalnum():
        return None
    return body[:start + opening.index(b"[")], body[end + len(closing):], ids
