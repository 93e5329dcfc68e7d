"""Import path kept for web apps: ``from app.producer import EventProducer`` (the client is ``app.client``)."""

from app.client import EventProducer

__all__ = ["EventProducer"]
