"""What every source produces: a :class:`Dataset` of uint8 images, or a one-line
:class:`DataError` saying what is wrong and what is allowed."""

from __future__ import annotations

import dataclasses

import numpy as np

SPLITS = ("train", "test")
ARRAY_KEYS = ("train_images", "train_labels", "test_images", "test_labels")
ARCHIVE_EXTS = (".tar.gz", ".tgz", ".tar")
FOLDER_FORM = (
    "folder:PATH (a directory or .tar.gz/.tgz/.tar archive holding train/<class>/ and "
    "test/<class>/ image folders)"
)
ALLOWED_FORMS = f"allowed sources: tfds:NAME (e.g. tfds:cifar10) or {FOLDER_FORM}"


def one_line(text: object) -> str:
    """`text` with its lines joined by single spaces."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


class DataError(ValueError):
    """One-line, user-facing data problem (the CLI prints ``str(e)`` and exits 2).

    ``subject`` says which input is at fault (``"source"``, ``"train_subset"``,
    ``"test_subset"``, or ``None`` when no user input is), so a front end can say which of
    its own options sets it without the library naming them.
    """

    def __init__(self, message: object, *, subject: str | None = "source") -> None:
        # The CLI prints str(e) as a single line; never let an embedded message break that.
        super().__init__(one_line(message))
        self.subject = subject


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """Decoded image classification data held in host memory (arrays are read-only).

    ``eq=False``: equality/hash are by identity, since comparing image arrays elementwise
    has no single truth value.
    """

    train_images: np.ndarray  # uint8 (N, H, W, 3)
    train_labels: np.ndarray  # int32 (N,)
    test_images: np.ndarray  # uint8 (M, H, W, 3)
    test_labels: np.ndarray  # int32 (M,)
    classes: tuple[str, ...]
    source: str  # the resolved spec, e.g. "folder:/abs/path.tar.gz"
    checksum: str  # hex digest identifying the source content

    @property
    def num_classes(self) -> int:
        """Number of classes (labels are ``0 .. num_classes - 1``)."""
        return len(self.classes)

    def __repr__(self) -> str:
        return (
            f"Dataset(source={self.source!r}, train={self.train_images.shape}, "
            f"test={self.test_images.shape}, classes={len(self.classes)}, "
            f"checksum={self.checksum[:12]}...)"
        )


def readonly(a: np.ndarray) -> np.ndarray:
    """`a`, marked read-only in place."""
    # A Dataset is shared (e.g. session fixtures, several runs in one process): forbid
    # accidental in-place edits of the decoded pixels.
    a.flags.writeable = False
    return a


def make_dataset(
    arrays: dict[str, np.ndarray], classes: tuple[str, ...], source: str, checksum: str
) -> Dataset:
    """A :class:`Dataset` of read-only `arrays` (keyed by :data:`ARRAY_KEYS`)."""
    return Dataset(
        **{key: readonly(arrays[key]) for key in ARRAY_KEYS},
        classes=tuple(classes),
        source=source,
        checksum=checksum,
    )
