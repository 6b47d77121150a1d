"""Uploads enter the application layer here, under the configured caps."""

from __future__ import annotations

from service.faces.intake import DecodedImage, decode_upload
from service.settings import Settings


class Uploads:
    def __init__(self, settings: Settings) -> None:
        self.max_bytes = settings.max_upload_bytes
        self.max_pixels = settings.max_pixels

    def decode(self, data: bytes) -> DecodedImage:
        return decode_upload(data, max_bytes=self.max_bytes, max_pixels=self.max_pixels)
