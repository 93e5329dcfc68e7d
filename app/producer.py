"""Import path for web apps: ``from app.producer import EventProducer`` (the code is in ``app.write.producer``)."""

from app.write.producer import EventProducer

__all__ = ["EventProducer"]
