"""Bounded, streaming read of a ``multipart/form-data`` upload (``POST /v1/files``).

Starlette's form parser spools any file part to disk whatever its size, so an
oversize upload would cost the server its full size before being refused.
Here the body is fed chunk by chunk to python-multipart's streaming parser and
the file part is counted as it arrives: the moment it passes the limit the
read stops and a 413 is raised, so at most ``max_file_bytes`` (plus one chunk)
is ever held. A ``Content-Length`` that already announces too much is refused
before a single body byte is read. Text fields (``purpose``) are capped too.

The whole request is bounded, not only the file part: the body may carry at
most ``MAX_PARTS`` parts, each part's headers at most ``MAX_PART_HEADER_BYTES``,
and the body as streamed (chunked requests included, which announce no length)
at most ``max_file_bytes + FRAMING_ALLOWANCE`` bytes; past any of these the read
stops with a 413. So the server never holds more than the limit, the framing
allowance and one chunk, whatever the client sends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart.multipart import MultipartParser, parse_options_header

from harli_sgl.jobs.errors import ApiError, bad_request, too_large

MAX_FIELD_BYTES = 4096
MAX_FILENAME_CHARS = 512
# Room for the multipart framing around the file: boundaries, part headers, small fields.
FRAMING_ALLOWANCE = 64 * 1024
# OpenAI's form has two parts (file, purpose); a few more are tolerated, no more.
MAX_PARTS = 8
MAX_PART_HEADER_BYTES = 8192


@dataclass
class Upload:
    """The parsed form: the ``file`` part and the text fields (``purpose``, ...)."""

    filename: str
    data: bytes
    fields: dict[str, str] = field(default_factory=dict)


class _Collector:
    """python-multipart callbacks that assemble parts and enforce the size limits."""

    def __init__(self, file_field: str, max_file_bytes: int) -> None:
        self.file_field = file_field
        self.max_file_bytes = max_file_bytes
        self.fields: dict[str, str] = {}
        self.file: bytearray | None = None
        self.filename: str | None = None
        self.ended = False
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[str, bytes] = {}
        self._buf = bytearray()
        self._name: str | None = None
        self._is_file = False
        self._parts = 0
        self._header_bytes = 0

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda d, s, e: self._header_data(self._header_field, d[s:e]),
            "on_header_value": lambda d, s, e: self._header_data(self._header_value, d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _part_begin(self) -> None:
        self._parts += 1
        if self._parts > MAX_PARTS:
            raise ApiError(413, f"the form has more than {MAX_PARTS} parts; send only 'file' and "
                           "'purpose'", code="payload_too_large")
        self._header_bytes = 0
        self._headers = {}
        self._buf = bytearray()
        self._name = None
        self._is_file = False

    def _header_data(self, into: bytearray, data: bytes) -> None:
        self._header_bytes += len(data)
        if self._header_bytes > MAX_PART_HEADER_BYTES:
            raise ApiError(413, f"the headers of form part {self._parts} exceed "
                           f"{MAX_PART_HEADER_BYTES} bytes", code="payload_too_large")
        into.extend(data)

    def _header_end(self) -> None:
        self._headers[self._header_field.decode("latin-1").lower()] = bytes(self._header_value)
        self._header_field.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get("content-disposition", b""))
        name = options.get(b"name")
        if name is None:
            raise bad_request("multipart part without a name")
        self._name = name.decode("utf-8", "replace")
        self._is_file = self._name == self.file_field
        if self._is_file:
            if self.file is not None:
                raise bad_request(f"more than one '{self.file_field}' part", param=self.file_field)
            raw_name = options.get(b"filename", b"upload.jsonl")
            self.filename = raw_name.decode("utf-8", "replace")[:MAX_FILENAME_CHARS] or "upload.jsonl"
            self.file = self._buf

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        self._buf.extend(data[start:end])
        if self._is_file and len(self._buf) > self.max_file_bytes:
            raise too_large("The uploaded file", self.max_file_bytes)
        if not self._is_file and len(self._buf) > MAX_FIELD_BYTES:
            raise ApiError(413, f"form field '{self._name}' is longer than {MAX_FIELD_BYTES} "
                           "bytes", param=self._name, code="payload_too_large")

    def _part_end(self) -> None:
        if not self._is_file and self._name is not None:
            self.fields[self._name] = self._buf.decode("utf-8", "replace")

    def _end(self) -> None:
        self.ended = True


async def read_multipart(chunks: AsyncIterator[bytes], content_type: str | None,
                         content_length: str | None, *, max_file_bytes: int,
                         file_field: str = "file") -> Upload:
    """Parse the body into an :class:`Upload`, raising :class:`ApiError` (400/413) on bad input."""
    mime, params = parse_options_header(content_type or "")
    boundary = params.get(b"boundary")
    if mime != b"multipart/form-data" or not boundary:
        raise bad_request("expected a multipart/form-data body with a 'file' and a 'purpose' field")
    if content_length is not None and content_length.isdigit() \
            and int(content_length) > max_file_bytes + FRAMING_ALLOWANCE:
        raise too_large("The uploaded file", max_file_bytes)
    collector = _Collector(file_field, max_file_bytes)
    parser = MultipartParser(boundary, collector.callbacks())
    max_body = max_file_bytes + FRAMING_ALLOWANCE
    received = 0
    try:
        async for chunk in chunks:
            received += len(chunk)
            if received > max_body:  # whatever the body holds, and with no Content-Length too
                raise ApiError(413, f"The request body exceeds the limit of {max_body} bytes "
                               f"(the file limit {max_file_bytes} plus {FRAMING_ALLOWANCE} for the "
                               "form around it)", code="payload_too_large")
            if chunk:
                parser.write(chunk)
            if collector.ended:
                break
        parser.finalize()
    except ApiError:
        raise
    except Exception as exc:  # python-multipart's parse errors, and a client that hung up
        raise bad_request(f"malformed multipart body: {exc}") from None
    if not collector.ended:
        raise bad_request("malformed multipart body: it ends before the closing boundary")
    if collector.file is None or collector.filename is None:
        raise bad_request(f"missing the '{file_field}' part", param=file_field)
    return Upload(collector.filename, bytes(collector.file), collector.fields)
