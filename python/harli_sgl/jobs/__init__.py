"""OpenAI-compatible files and fine-tuning jobs: the API, its validation and its persistent store.

* :mod:`.store` (with :mod:`.schema`, :mod:`.objects`, :mod:`.db`): ``JobStore`` over SQLite
  (one instance's HTTP process and finetune worker) or PostgreSQL (a fleet);
* :mod:`.router`: the FastAPI routes SGLang's app mounts (the only FastAPI user here);
* :mod:`.job_request`, :mod:`.hyperparameters`, :mod:`.validation`, :mod:`.upload`,
  :mod:`.ids`, :mod:`.errors`: request checking (pydantic models), free of FastAPI.

Nothing here imports sglang. Import submodules directly; this package imports nothing
so the worker can use the store without pulling in FastAPI.
"""
