"""The feed core: one producer loop (source -> framer -> decoder -> records) that every mode drives.

``producer``: the loop itself and its thread (:class:`~feedhandler.core.producer.Producer`); the file
:class:`~feedhandler.pipeline.Feed` and the live :class:`~feedhandler.capture.live._live.LiveFeed` are
a Producer with a file source or a live capture source.
"""
