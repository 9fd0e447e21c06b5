"""The remote attestation service (``tboot-py serve``): an HTTP adapter over the appraisal core.

Modules: ``schema`` (tables) and ``db`` (engines, migrations), ``service`` (operations),
``appraisal`` (the one call into the core), ``ear`` (EAR tokens), ``app`` (FastAPI routes),
``scheduler`` (liveness and webhooks), ``client`` (HTTP client for the agent and admin CLI).
Needs the ``server`` extra: ``pip install 'tboot-py[server]'``.
"""
