"""The fleet's adapter catalog over a real store (SQLite, then PostgreSQL)."""

from __future__ import annotations

from harli_sgl.jobs import ids
from harli_sgl.jobs.adapter_catalog import AdapterCatalog
from harli_sgl.jobs.artifacts import SharedDir
from harli_sgl.jobs.store import JobStore

from store_util import job_in


def test_new_adapters_arrive_once_each_in_success_order_with_shared_paths(tmp_path, db_url):
    store = JobStore(str(tmp_path / "w"), db_url=db_url)
    shared = SharedDir(str(tmp_path / "shared"))
    catalog = AdapterCatalog(store, shared)
    assert catalog.new_adapters() == []
    first, second = job_in(store, "running"), job_in(store, "running")
    job_in(store, "failed")
    store.set_status(second["id"], "succeeded", fine_tuned_model="ft-second")
    seen = catalog.new_adapters()
    assert [a.name for a in seen] == ["ft-second"]
    # Its files are in the job's directory, whatever the model is called.
    assert seen[0].path == str(tmp_path / "shared" / "adapters" / ids.adapter_dir_name(second["id"]))
    assert catalog.new_adapters() == []  # nothing twice
    store.set_status(first["id"], "succeeded", fine_tuned_model="ft-first")  # created earlier
    assert [a.name for a in catalog.new_adapters()] == ["ft-first"]
    # A second instance's catalog (another store object) starts from the beginning.
    other = AdapterCatalog(JobStore(str(tmp_path / "w2"), db_url=db_url), shared) if db_url else \
        AdapterCatalog(store, shared)
    assert [a.name for a in other.new_adapters()] == ["ft-second", "ft-first"]


def test_find_names_only_finished_adapters(tmp_path, db_url):
    store = JobStore(str(tmp_path / "w"), db_url=db_url)
    catalog = AdapterCatalog(store, SharedDir(str(tmp_path)))
    job = job_in(store, "running")
    assert catalog.find("ft-x") is None
    store.set_status(job["id"], "succeeded", fine_tuned_model="ft-x")
    found = catalog.find("ft-x")
    assert found is not None and found.path == str(tmp_path / "adapters" / ids.adapter_dir_name(job["id"]))
    assert catalog.find("ft-y") is None


def test_find_names_a_checkpoint_by_its_model_name(tmp_path, db_url):
    store = JobStore(str(tmp_path / "w"), db_url=db_url)
    catalog = AdapterCatalog(store, SharedDir(str(tmp_path)))
    job = job_in(store, "running")
    store.add_checkpoint(job["id"], 3, str(tmp_path / "checkpoints" / "step-3"))
    name = store.list_checkpoints(job["id"])[0][0]["fine_tuned_model_checkpoint"]
    found = catalog.find(name)
    assert found is not None and found.name == name and found.job_id == job["id"]
    assert found.path == str(tmp_path / "checkpoints" / "step-3")
    assert catalog.find(name.replace("step-3", "step-4")) is None
    assert catalog.new_adapters() == []  # a checkpoint is found on request, never listed ahead
