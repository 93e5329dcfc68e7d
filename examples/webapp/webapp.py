"""An example web app that sends this service its events and reads its numbers: a Flask site with follow, upload and
react buttons and a profile page.

Writes are the dual-write recipe. Each button changes a row of the site's own SQL database (the site's tables,
``app.legacy.models``; SQLite here by default, PostgreSQL with ``DATABASE_URL``) in one SQLAlchemy transaction and
registers the matching event with ``after_commit``, so the event is sent only once the row is committed and never
for a transaction that rolls back. The event and the row carry the same time.

Reads go through the service's read API: ``UserMetricsQueryService`` for the profile's counts and
``UserReactionQueryService`` for the viewer's reactions on the page of images (Redis first, ClickHouse behind a
miss; on embedded defaults the running worker answers a miss).

There is no login: ``?viewer=ID`` stands in for the signed-in user, and the forms carry no CSRF token. A real site
has both. Run it with ``flask --app examples/webapp/webapp.py run`` (see the README beside this file).
"""

from __future__ import annotations

import atexit
import os
import sys
from dataclasses import dataclass
from datetime import UTC, datetime

from flask import Flask, abort, current_app, redirect, render_template, request, url_for
from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.orm import Session
from werkzeug.wrappers.response import Response

from app.client import EventProducer, after_commit, sending_app
from app.core.metrics import UserMetrics
from app.core.settings import Settings, load_settings
from app.legacy.models import (
    REACTION_FLAG,
    Base,
    EngagementType,
    Image,
    ImageReaction,
    ReviewReactions,
    User,
    UserEngagement,
)
from app.read.metrics_service import MetricsResult, UserMetricsQueryService
from app.read.reactions_service import ReactionsResult, UserReactionQueryService
from app.read.sources import reactions_reader
from app.stores.runtime import Runtime

IMAGES_PER_PAGE = 12
# The site's reactions that the service counts, with their bit in a reaction state (Dislike is not counted).
REACTION_BITS = REACTION_FLAG
# A few users to click around with on a fresh database.
DEMO_USERS = {1: "alice", 2: "bob", 3: "carol"}


@dataclass
class Services:
    """What the views use, built once per web process: the site's database, the event producer, the readers."""

    db: Engine
    producer: EventProducer
    metrics: UserMetricsQueryService
    reactions: UserReactionQueryService
    flower_url: str


def create_app(settings: Settings | None = None) -> Flask:
    """The Flask app, configured from the environment (the service's settings: ``REDIS_URL``, ``CELERY_BROKER_URL``,
    ``CLICKHOUSE_URL``, ``DATA_DIR``, ``DATABASE_URL``, ``FLOWER_PORT``; ``FLOWER_URL`` overrides Flower's link)."""
    settings = settings or load_settings()
    db = create_engine(settings.database_url or f"sqlite:///{settings.data_path / 'example-webapp.sqlite3'}")
    if db.url.get_backend_name() == "sqlite":
        settings.data_path.mkdir(parents=True, exist_ok=True)
    Base.metadata.create_all(db)
    _add_demo_users(db)
    rt = Runtime(settings)  # Redis and ClickHouse clients for the readers, opened on first use
    atexit.register(rt.close)
    atexit.register(db.dispose)
    app = Flask(__name__)
    app.extensions["usermetrics"] = Services(
        db=db,
        producer=EventProducer(sending_app(settings=settings)),
        metrics=UserMetricsQueryService(rt),
        reactions=reactions_reader(rt),
        flower_url=os.environ.get("FLOWER_URL") or f"http://127.0.0.1:{settings.flower_port}/",
    )
    app.add_url_rule("/", view_func=index)
    app.add_url_rule("/users/<int:user_id>", view_func=profile)
    app.add_url_rule("/users/<int:user_id>/follow", view_func=follow, methods=["POST"])
    app.add_url_rule("/users/<int:user_id>/uploads", view_func=upload, methods=["POST"])
    app.add_url_rule("/images/<int:image_id>/reactions", view_func=react, methods=["POST"])
    return app


def _add_demo_users(db: Engine) -> None:
    with Session(db) as session, session.begin():
        known = set(session.scalars(select(User.id).where(User.id.in_(DEMO_USERS))))
        now = datetime.now(UTC)
        session.add_all(User(id=i, username=name, createdAt=now) for i, name in DEMO_USERS.items() if i not in known)


def services() -> Services:
    found: Services = current_app.extensions["usermetrics"]
    return found


def viewer() -> int:
    """The signed-in user (a stand-in for the site's login): ``viewer`` in the query string or the form."""
    return request.values.get("viewer", 1, type=int)


def signed_in(session: Session) -> int:
    """The viewer, who must be one of the site's users to write anything (the site's login would see to that)."""
    user_id = viewer()
    if session.get(User, user_id) is None:
        abort(403, "sign in as one of the site's users")
    return user_id


def back_to(user_id: int) -> Response:
    return redirect(url_for("profile", user_id=user_id, viewer=viewer()))


# Writes: one transaction each, the event sent after it commits ------------------------------------------------------


def follow(user_id: int) -> Response:
    """Follow ``user_id``, or stop following: the ``UserEngagement`` row and a ``record_follow`` event."""
    s = services()
    now = datetime.now(UTC)
    with Session(s.db) as session:
        follower = signed_in(session)
        if follower == user_id:
            abort(400, "a user cannot follow themselves")
        if session.get(User, user_id) is None:
            abort(404)
        row = session.get(UserEngagement, (follower, user_id))
        following = row is None
        if row is None:
            session.add(
                UserEngagement(userId=follower, targetUserId=user_id, type=EngagementType.FOLLOW, createdAt=now)
            )
        else:
            session.delete(row)
        # Registered now, run once the transaction has committed (and never if it rolls back).
        after_commit(session, lambda: s.producer.record_follow(follower, user_id, is_follow=following, occurred_at=now))
        session.commit()
    return back_to(user_id)


def upload(user_id: int) -> Response:
    """Upload an image to one's own profile: an ``Image`` row and a ``record_upload`` event."""
    s = services()
    now = datetime.now(UTC)
    with Session(s.db) as session:
        if signed_in(session) != user_id:
            abort(403, "upload to your own profile")
        image = Image(userId=user_id, createdAt=now)
        session.add(image)
        session.flush()  # the row's id, for the event
        # Read the id now: once committed, the object is expired and the hook may not load it again.
        image_id = image.id
        after_commit(session, lambda: s.producer.record_upload(user_id, "Image", image_id, occurred_at=now))
        session.commit()
    return back_to(user_id)


def react(image_id: int) -> Response:
    """Toggle one reaction of the viewer on an image: an ``ImageReaction`` row added or removed, and a
    ``set_reaction`` event with the viewer's full reaction state on that image (the service keeps the latest)."""
    try:
        reaction = ReviewReactions(request.form.get("reaction", ""))
    except ValueError:
        abort(400, "unknown reaction")
    if reaction not in REACTION_BITS:
        abort(400, "this reaction is not counted")
    s = services()
    now = datetime.now(UTC)
    with Session(s.db) as session:
        user_id = signed_in(session)
        image = session.get(Image, image_id)
        if image is None:
            abort(404)
        owner_id = image.userId
        mine = (ImageReaction.imageId == image_id, ImageReaction.userId == user_id)
        row = session.scalars(select(ImageReaction).where(*mine, ImageReaction.reaction == reaction)).first()
        if row is None:
            session.add(
                ImageReaction(imageId=image_id, userId=user_id, reaction=reaction, createdAt=now, updatedAt=now)
            )
        else:
            session.delete(row)
        session.flush()
        # The event carries the viewer's whole state on the image, read back inside the same transaction.
        given = session.scalars(select(ImageReaction.reaction).where(*mine))
        flags = sum(int(REACTION_BITS[r]) for r in given if r in REACTION_BITS)
        after_commit(
            session, lambda: s.producer.set_reaction(user_id, image_id, flags, owner_id=owner_id, occurred_at=now)
        )
        session.commit()
    return back_to(owner_id)


# Reads: the site's own rows for what the page lists, the service for the numbers -------------------------------------


def index() -> Response:
    return redirect(url_for("profile", user_id=2, viewer=viewer()))


def profile(user_id: int) -> str:
    s = services()
    me = viewer()
    with Session(s.db) as session:
        user = session.get(User, user_id)
        if user is None:
            abort(404)
        users = list(session.scalars(select(User).order_by(User.id).limit(20)))
        page = select(Image).where(Image.userId == user_id).order_by(Image.id.desc()).limit(IMAGES_PER_PAGE)
        images = list(session.scalars(page))
        image_total = session.scalar(select(func.count()).select_from(Image).where(Image.userId == user_id)) or 0
        following = session.get(UserEngagement, (me, user_id)) is not None
    metrics: MetricsResult = s.metrics.get_user_metrics([user_id])
    reactions = s.reactions.get_user_reactions(me, [i.id for i in images]) if images else ReactionsResult()
    shown: UserMetrics = metrics[user_id]
    return render_template(
        "profile.html",
        user=user,
        users=users,
        viewer=me,
        following=following,
        metrics=shown,
        stale=user_id in metrics.stale,
        images=images,
        image_total=image_total,
        reactions_counted=list(REACTION_BITS),
        # The viewer's reactions on each image shown, as the service has them.
        pressed={i.id: {r for r, bit in REACTION_BITS.items() if reactions.get(i.id, 0) & bit} for i in images},
        flower_url=s.flower_url,
    )


def main() -> None:
    """``python examples/webapp/webapp.py [PORT]``: the development server on loopback."""
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    create_app().run(host="127.0.0.1", port=port)


if __name__ == "__main__":
    main()
