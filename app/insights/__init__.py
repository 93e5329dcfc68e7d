"""Creator insights from the event log: growth, retention cohorts, audience, activity, peers and achievements.

Every answer is a pure function of the log and the current excluded set (docs/architecture.md, "Creator
insights"). Growth, retention, audience and activity are computed from the log at read time, so an event shows as
soon as it is written; peers and achievements are kept by their beat jobs and carry the run they are exact for.
"""
