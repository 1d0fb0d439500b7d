"""A design matrix with dense and sparse columns: what the router's logistic regression multiplies.

Hashed word n-grams are many columns (2^18 by default, so that distinct words seldom share one) and few
of them are non-zero in any row: they are kept as (row, column, value) triples. Everything else
(character n-grams in a few thousand columns, shape features) is a dense block. Both live in one
column numbering, so a weight vector is the same whichever way a column is stored. Memory and the cost
of a product grow with the non-zero entries and the dense block; a product with the transpose also
touches every column once, which is why a fit first drops the sparse columns no row has (`compact`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Matrix = npt.NDArray[np.float32]
Vector = npt.NDArray[np.float64]
Index = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Design:
    """`rows` x `width` features: `dense[:, j]` is column `dense_at[j]`; the sparse entries are
    `values[i]` at (`entry_rows[i]`, `entry_columns[i]`), at most one entry per cell, never in a dense
    column, and in row order (the builder and `take` keep them so)."""

    rows: int
    width: int
    dense: Matrix
    dense_at: Index
    entry_rows: Index
    entry_columns: Index
    values: Matrix

    @classmethod
    def of(cls, matrix: Matrix) -> Design:
        """A plain dense matrix."""
        dense = np.ascontiguousarray(matrix, dtype=np.float32)
        empty = np.zeros(0, dtype=np.int64)
        return cls(dense.shape[0], dense.shape[1], dense, np.arange(dense.shape[1], dtype=np.int64), empty, empty,
                   np.zeros(0, dtype=np.float32))

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns)."""
        return self.rows, self.width

    def __matmul__(self, weights: npt.NDArray[np.floating]) -> Vector:
        """The product with a vector of `width` weights: one value per row."""
        w = np.asarray(weights, dtype=np.float32)
        out = (self.dense @ w[self.dense_at]).astype(np.float64)
        if len(self.values):
            out += np.bincount(self.entry_rows, weights=self.values * w[self.entry_columns], minlength=self.rows)
        return out

    def transpose_times(self, per_row: npt.NDArray[np.floating]) -> Vector:
        """The product of the transpose with a vector of one value per row: one value per column."""
        u = np.asarray(per_row, dtype=np.float32)
        out = np.zeros(self.width)
        if len(self.values):
            out += np.bincount(self.entry_columns, weights=self.values * u[self.entry_rows], minlength=self.width)
        out[self.dense_at] += self.dense.T @ u
        return out

    def take(self, index: Sequence[int] | Index) -> Design:
        """The rows at `index`, in that order (a row may be taken more than once)."""
        pick = np.asarray(index, dtype=np.int64)
        if len(pick) and (pick.min() < 0 or pick.max() >= self.rows):
            raise IndexError(f"row indexes must be in 0..{self.rows - 1}")
        bounds = np.searchsorted(self.entry_rows, np.arange(self.rows + 1))  # row r's entries: bounds[r]:bounds[r+1]
        counts = bounds[pick + 1] - bounds[pick]
        entry = np.repeat(bounds[pick] - (np.cumsum(counts) - counts), counts) + np.arange(int(counts.sum()))
        return Design(len(pick), self.width, self.dense[pick], self.dense_at,
                      np.repeat(np.arange(len(pick), dtype=np.int64), counts), self.entry_columns[entry],
                      self.values[entry])

    def compact(self) -> tuple[Design, Index]:
        """The same rows without the sparse columns that none of them has, and where each kept column was
        (dense columns are all kept). A fit on it costs what the data holds, not what the hashing reserves."""
        kept = np.union1d(self.dense_at, np.unique(self.entry_columns))
        renumber = np.zeros(self.width, dtype=np.int64)
        renumber[kept] = np.arange(len(kept))
        return (Design(self.rows, len(kept), self.dense, renumber[self.dense_at], self.entry_rows,
                       renumber[self.entry_columns], self.values), kept)

    def scaled(self, scale: Matrix, shift: Matrix) -> Design:
        """Every column multiplied by `scale` and moved by `shift` (which must be 0 on sparse columns: a
        shifted sparse column would be dense)."""
        if np.count_nonzero(shift) > np.count_nonzero(shift[self.dense_at]):
            raise ValueError("a sparse column cannot be shifted")
        dense = (self.dense * scale[self.dense_at] + shift[self.dense_at]).astype(np.float32)
        return Design(self.rows, self.width, dense, self.dense_at, self.entry_rows, self.entry_columns,
                      (self.values * scale[self.entry_columns]).astype(np.float32))

    def documents(self) -> Index:
        """How many rows have a non-zero value in each column."""
        counts = np.bincount(self.entry_columns[self.values != 0], minlength=self.width).astype(np.int64)
        counts[self.dense_at] += np.count_nonzero(self.dense, axis=0)
        return counts

    def row(self, at: int) -> Matrix:
        """Row `at` as a dense vector of `width` values (for tests and reports)."""
        out = np.zeros(self.width, dtype=np.float32)
        out[self.dense_at] = self.dense[at]
        hit = self.entry_rows == at
        out[self.entry_columns[hit]] = self.values[hit]
        return out


class Builder:
    """Collects a design matrix row by row: sparse blocks by (columns, values), dense blocks by slices."""

    def __init__(self, rows: int, width: int, dense_at: Index) -> None:
        self.rows = rows
        self.width = width
        self.dense_at = dense_at
        self.dense = np.zeros((rows, len(dense_at)), dtype=np.float32)
        self._rows: list[Index] = []
        self._columns: list[Index] = []
        self._values: list[Matrix] = []

    def sparse(self, row: int, columns: Index, values: Matrix) -> None:
        """Entries of row `row` (distinct columns, none of them dense)."""
        self._rows.append(np.full(len(columns), row, dtype=np.int64))
        self._columns.append(columns.astype(np.int64, copy=False))
        self._values.append(values.astype(np.float32, copy=False))

    def build(self) -> Design:
        """The matrix collected so far."""
        if not self._values:
            empty = np.zeros(0, dtype=np.int64)
            return Design(self.rows, self.width, self.dense, self.dense_at, empty, empty, np.zeros(0, dtype=np.float32))
        rows, columns, values = np.concatenate(self._rows), np.concatenate(self._columns), np.concatenate(self._values)
        if np.any(np.diff(rows) < 0):  # blocks were added one after another: put the entries in row order
            order = np.argsort(rows, kind="stable")
            rows, columns, values = rows[order], columns[order], values[order]
        return Design(self.rows, self.width, self.dense, self.dense_at, rows, columns, values)
