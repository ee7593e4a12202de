"""The llama.cpp build follows the plan's GPUs: Pascal/Volta hosts get their architectures
compiled in, and a wheel variant of their own (never a Turing+ build they cannot run)."""

from pathlib import Path

import pytest
import yaml
from ansible.module_utils import llm_gpu
from ansible.module_utils.llm_planner import plan
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

from conftest import SYSFS, fixture_runner

REPO = Path(__file__).resolve().parents[2]
DEFAULTS = {k: trust_as_template(v) if isinstance(v, str) else v  # role defaults are templates
            for k, v in yaml.safe_load((REPO / "roles" / "llamacpp" / "defaults" / "main.yml")
                                       .read_text()).items()}


def _render(card):
    facts = llm_gpu.gather(fixture_runner(card), "/usr/bin/nvidia-smi", str(SYSFS / "empty"))
    variables = dict(DEFAULTS, llm_plan=plan(facts, {}).to_dict(), llm_cuda_version="12.3",
                     ansible_facts={"distribution": "Debian",
                                    "distribution_major_version": "12"})
    templar = Templar(loader=DataLoader(), variables=variables)
    return {k: str(templar.template(variables[k])).strip()
            for k in ("llamacpp_cuda_architectures", "llamacpp_package_variant",
                      "llamacpp_cmake_args_cuda")}


@pytest.mark.parametrize("card,archs,variant", [
    ("rtx3060", "75;80;86;89;90", "debian12-cuda12.3"),
    ("t4", "75;80;86;89;90", "debian12-cuda12.3"),
    ("v100-16gb", "70;75;80;86;89;90", "debian12-cuda12.3-sm70-75-80-86-89-90"),
    ("p100", "60;75;80;86;89;90", "debian12-cuda12.3-sm60-75-80-86-89-90"),
])
def test_cuda_build_covers_the_planned_gpu(card, archs, variant):
    out = _render(card)
    assert out["llamacpp_cuda_architectures"] == archs
    assert out["llamacpp_package_variant"] == variant
    assert out["llamacpp_cmake_args_cuda"].endswith("-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES="
                                                     + archs)
