"""llm_disk_free: the filesystem of a path that does not exist yet (a fresh host's model root)."""

import os

import llm_disk_free


def test_missing_path_is_measured_at_its_nearest_existing_parent(tmp_path):
    res = llm_disk_free.disk_free(str(tmp_path / "var" / "lib" / "llm" / "models"))
    assert res["existing"] == str(tmp_path)
    st = os.statvfs(tmp_path)
    assert res["size_bytes"] == st.f_blocks * st.f_frsize
    assert 0 < res["avail_bytes"] <= res["size_bytes"]
    assert os.path.ismount(res["mount"]) and str(tmp_path.resolve()).startswith(res["mount"])


def test_mount_point_of_the_root_is_the_root():
    assert llm_disk_free.mount_point("/") == "/"
    assert llm_disk_free.nearest_existing("/nonexistent-llm-test/a/b") == "/"
