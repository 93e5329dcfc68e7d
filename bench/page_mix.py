"""The pages a web app reads, for ``bench seeds``: a fixed, seeded mix of metrics pages (the creators shown on a
page) and reactions pages (a viewer's reactions on a page of images), each drawn with Zipf popularity.

Viewers and creators are drawn by popularity over the users (rank k is user k, as the legacy generator's are), images
over the images (rank k is image k: the generator's popular images are the low ids). The same spec always gives the
same pages, so the client process and the legacy baseline read exactly the same pages without passing them around.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any, Literal

from app.ops.simulate import Zipf

Kind = Literal["metrics", "reactions"]


@dataclass(frozen=True)
class MixSpec:
    users: int
    images: int
    pages: int  # measured page reads
    warmup: int  # page reads before them, untimed (the cache a site's traffic has left)
    metrics_share: float = 0.3
    creators_per_page: int = 20
    images_per_page: int = 50
    zipf_s: float = 1.1
    seed: int = 11

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MixSpec:
        return cls(**data)


@dataclass(frozen=True)
class Page:
    kind: Kind
    user: int  # the viewer of a reactions page; 0 for a metrics page
    ids: tuple[int, ...]  # the creators (metrics) or the images (reactions), distinct, in page order


def _distinct(draw: Any, n: int, limit: int) -> tuple[int, ...]:
    """``n`` distinct draws (fewer when fewer exist), in the order first drawn."""
    out: dict[int, None] = {}
    for _ in range(n * 20):
        if len(out) >= min(n, limit):
            break
        out[draw()] = None
    return tuple(out)


def page_mix(spec: MixSpec) -> list[Page]:
    """The warm-up pages followed by the measured ones."""
    rnd = random.Random(spec.seed)  # noqa: S311 - workload sampling, not security
    users = Zipf(spec.users, spec.zipf_s, rnd).draw
    images = Zipf(spec.images, spec.zipf_s, rnd).draw
    pages = []
    for _ in range(spec.warmup + spec.pages):
        if rnd.random() < spec.metrics_share:
            pages.append(Page("metrics", 0, _distinct(users, spec.creators_per_page, spec.users)))
        else:
            pages.append(Page("reactions", users(), _distinct(images, spec.images_per_page, spec.images)))
    return pages


def measured(spec: MixSpec, pages: list[Page]) -> list[Page]:
    """The measured pages of ``page_mix(spec)``."""
    return pages[spec.warmup :]
