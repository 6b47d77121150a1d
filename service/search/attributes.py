"""Filterable template attributes kept beside the FAISS index, dense over template ids.

Template ids are small positive autoincrement integers, so per-id arrays (sex code,
birth_day) and one packed bitmap per organisation are cheap, and a filter becomes a
bitmap that FAISS tests during the scan: no over-fetching, no per-request id lists.
Not thread-safe on its own; the index's readers-writer lock guards it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from service.search.port import IdArray, SearchFilter, TemplateAttributes

Bitmap = npt.NDArray[np.uint8]  # bit (id % 8) of byte (id // 8), as faiss.IDSelectorBitmap
SEX_CODES = {"unknown": 0, "female": 1, "male": 2}  # anything else counts as unknown
UNKNOWN_SEX = 0
NO_ORG = -1


class AttributeTable:
    def __init__(self, capacity: int = 1024) -> None:
        capacity = _round_up(max(capacity, 8))
        self._org = np.full(capacity, NO_ORG, np.int32)  # org code per id; NO_ORG = absent
        self._sex = np.zeros(capacity, np.int8)
        self._birth = np.full(capacity, np.nan)  # float64: day ordinals stay exact
        self._orgs: list[str] = []
        self._codes: dict[str, int] = {}
        self._bitmaps: dict[int, Bitmap] = {}  # org code -> packed membership

    @property
    def capacity(self) -> int:
        return len(self._org)

    def contains(self, ids: IdArray) -> npt.NDArray[np.bool_]:
        inside = (ids >= 0) & (ids < self.capacity)
        present = np.zeros(len(ids), bool)
        present[inside] = self._org[ids[inside]] != NO_ORG
        return present

    def put(self, ids: IdArray, attributes: Sequence[TemplateAttributes]) -> None:
        """Record attributes for ids that are not present (drop replaced ones first)."""
        orgs = np.array([self._code(a.org_id) for a in attributes], np.int32)
        sexes = np.array([SEX_CODES.get(a.sex, UNKNOWN_SEX) for a in attributes], np.int8)
        births = np.array([np.nan if a.birth_day is None else a.birth_day for a in attributes])
        self.put_codes(ids, orgs, sexes, births)

    def put_codes(
        self,
        ids: IdArray,
        orgs: npt.NDArray[np.int32],
        sexes: npt.NDArray[np.int8],
        births: npt.NDArray[np.float64],
    ) -> None:
        if not len(ids):
            return
        self._reserve(int(ids.max()) + 1)
        self._org[ids], self._sex[ids], self._birth[ids] = orgs, sexes, births
        for code in np.unique(orgs):
            bitmap = self._bitmaps.setdefault(int(code), np.zeros(self.capacity // 8, np.uint8))
            members = ids[orgs == code]
            np.bitwise_or.at(bitmap, members >> 3, _bits(members))

    def drop(self, ids: IdArray) -> None:
        """Forget present ids (absent ones must be filtered out by the caller)."""
        orgs = self._org[ids]
        for code in np.unique(orgs):
            members = ids[orgs == code]
            np.bitwise_and.at(self._bitmaps[int(code)], members >> 3, ~_bits(members))
        self._org[ids], self._sex[ids], self._birth[ids] = NO_ORG, UNKNOWN_SEX, np.nan

    def org_code(self, org_id: str | None) -> int | None:
        """The table's number for an organisation (in order of first sight), None if unseen."""
        return None if org_id is None else self._codes.get(org_id)

    def org_codes(self, ids: IdArray) -> npt.NDArray[np.int32]:
        """The organisation number of each present id."""
        codes: npt.NDArray[np.int32] = self._org[ids]
        return codes

    def present(self) -> Bitmap:
        """The ids present, as a packed bitmap (for an index that keeps dead entries)."""
        packed: Bitmap = np.packbits(self._org != NO_ORG, bitorder="little")
        return packed

    def selection(self, where: SearchFilter) -> Bitmap:
        """The ids passing ``where`` as a packed bitmap (ids not indexed may be set too:
        FAISS only ever asks about indexed ones)."""
        selected = None
        if where.org_id is not None:
            code = self._codes.get(where.org_id)
            selected = None if code is None else self._bitmaps.get(code)
            if selected is None:
                return np.zeros(self.capacity // 8, np.uint8)
        keep = self._keep(where)
        if keep is None:
            assert selected is not None  # an active filter has some bound
            return selected
        packed = np.packbits(keep, bitorder="little")
        return packed if selected is None else packed & selected

    def _keep(self, where: SearchFilter) -> npt.NDArray[np.bool_] | None:
        """Vectorised sex and age masks; unknown sex and missing dates always pass."""
        keep = None
        if where.sex is not None:
            keep = (self._sex == SEX_CODES[where.sex]) | (self._sex == UNKNOWN_SEX)
        window = where.birth_day_range()
        if window is not None:
            earliest, latest = window
            births = self._birth
            fits = np.isnan(births) | ((births >= earliest) & (births <= latest))
            keep = fits if keep is None else keep & fits
        return keep

    def export(self, ids: IdArray) -> dict[str, npt.NDArray[np.generic]]:
        """The attributes of these ids as arrays aligned with them (for a snapshot)."""
        return {
            "org": self._org[ids],
            "orgs": np.array(self._orgs, dtype=np.str_),
            "sex": self._sex[ids],
            "birth_day": self._birth[ids],
        }

    @classmethod
    def restore(cls, ids: IdArray, arrays: dict[str, npt.NDArray[np.generic]]) -> AttributeTable:
        """The table ``export`` described; ValueError when the arrays do not fit the ids."""
        org, sex, birth = arrays["org"], arrays["sex"], arrays["birth_day"]
        if not len(org) == len(sex) == len(birth) == len(ids):
            raise ValueError("snapshot attributes do not match the indexed ids")
        table = cls(int(ids.max()) + 1 if len(ids) else 1024)
        for name in arrays["orgs"]:
            table._code(str(name))
        if len(org) and (org.min() < 0 or org.max() >= len(table._orgs)):
            raise ValueError("snapshot attributes name an unknown organisation")
        table.put_codes(ids, org.astype(np.int32), sex.astype(np.int8), birth.astype(np.float64))
        return table

    def _code(self, org_id: str) -> int:
        code = self._codes.get(org_id)
        if code is None:
            code = self._codes[org_id] = len(self._orgs)
            self._orgs.append(org_id)
        return code

    def _reserve(self, size: int) -> None:
        """Grow geometrically so a stream of new ids costs amortised O(1) each."""
        if size <= self.capacity:
            return
        grown = _round_up(max(size, 2 * self.capacity))
        extra = grown - self.capacity
        self._org = np.concatenate([self._org, np.full(extra, NO_ORG, np.int32)])
        self._sex = np.concatenate([self._sex, np.zeros(extra, np.int8)])
        self._birth = np.concatenate([self._birth, np.full(extra, np.nan)])
        for code, bitmap in self._bitmaps.items():
            self._bitmaps[code] = np.concatenate([bitmap, np.zeros(extra // 8, np.uint8)])


def popcount(bitmap: Bitmap) -> int:
    """How many ids a packed bitmap selects."""
    return int(np.bitwise_count(bitmap).sum(dtype=np.int64))


def _bits(ids: IdArray) -> Bitmap:
    bits: Bitmap = np.left_shift(1, ids & 7).astype(np.uint8)
    return bits


def _round_up(size: int) -> int:
    return -(-size // 8) * 8
