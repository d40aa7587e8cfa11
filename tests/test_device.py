"""The GPU image never serves on the CPU quietly: E5_DEVICE=cuda without a usable GPU stops setup, saying why.

No GPU here: torch's view of CUDA (is_available, the CUDA it was built for, the driver's CUDA) is replaced with
what each kind of host shows, and each message is checked for its cause and its way out.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from e5 import model
from e5.errors import WeightsError


@pytest.fixture
def host(monkeypatch):
    """Make this machine look like a host whose torch was built for `built` and whose driver supports `driver`."""

    def look_like(built: str | None, driver: int, available: bool = False):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
        monkeypatch.setattr(torch.version, "cuda", built)
        monkeypatch.setattr(model, "driver_cuda_version", lambda: driver)

    return look_like


def refusal(environ=None) -> str:
    with pytest.raises(WeightsError) as err:
        model.choose_device({"E5_DEVICE": "cuda"} if environ is None else environ)
    return str(err.value)


def test_no_gpu_visible_names_docker_run_gpus_all(host):
    host("12.6", 0)  # a container started without --gpus: no libcuda, no driver
    message = refusal()
    assert message.startswith("E5_DEVICE=cuda but CUDA is not available on this machine: ")
    assert "no NVIDIA GPU or driver is visible" in message and "`docker run --gpus all`" in message
    assert "E5_DEVICE=cpu" in message


def test_a_driver_too_old_for_the_images_cuda_gives_both_versions(host):
    host("12.6", 12020)  # driver of the CUDA 12.2 series, image built for 12.6
    message = refusal()
    assert "the NVIDIA driver supports CUDA up to 12.2, but this image's torch was built for CUDA 12.6" in message
    assert "update the host's NVIDIA driver" in message


def test_a_driver_new_enough_yet_no_gpu_says_where_to_look(host):
    host("12.6", 12080)
    message = refusal({"E5_DEVICE": "cuda:1"})
    assert message.startswith("E5_DEVICE=cuda:1 but CUDA is not available")
    assert "supports CUDA 12.8 and torch was built for CUDA 12.6" in message and "nvidia-smi" in message


def test_a_cpu_build_of_torch_says_so(host):
    host(None, 0)
    assert "is a CPU build" in refusal()


def test_cpu_stays_the_explicit_way_and_unset_chooses(host):
    host("12.6", 0)
    assert model.choose_device({"E5_DEVICE": "cpu"}) == "cpu"
    assert model.choose_device({}) == "cpu"  # scripts/serve.sh and the tests: no GPU, so the CPU
    host("12.6", 12080, available=True)
    assert model.choose_device({}) == "cuda" and model.choose_device({"E5_DEVICE": "cuda"}) == "cuda"


def test_the_driver_version_reads_zero_where_torch_has_no_cuda():
    if torch.version.cuda is None:  # this machine's CPU build has no cuDriverGetVersion
        assert model.driver_cuda_version() == 0
    assert model.cuda_version_text(12060) == "12.6" and model.cuda_version_text(13000) == "13.0"


def test_setup_logs_the_cuda_torch_was_built_for(host):
    host("12.6", 0)
    assert model.runtime_report("cpu") == f"torch {torch.__version__}, built for CUDA 12.6"
    host(None, 0)
    assert "built for CUDA none (CPU build)" in model.runtime_report("cpu")


def test_the_gpu_image_sets_the_device_to_cuda():
    import yaml

    config = yaml.safe_load((Path(__file__).resolve().parent.parent / "cog.yaml").read_text())
    assert "E5_DEVICE=cuda" in config["environment"] and config["build"]["gpu"] is True
