"""Shared pytest setup: the `device` marker (tests that need a real NVIDIA GPU)."""

import os

import pytest


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "device: needs a real NVIDIA GPU; runs only with LLM_DEVICE_TEST=1")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("LLM_DEVICE_TEST") == "1":
        return
    skip = pytest.mark.skip(reason="device test: set LLM_DEVICE_TEST=1 on a GPU host")
    for item in items:
        if "device" in item.keywords:
            item.add_marker(skip)
