"""liftlearn._device: which devices a fit may ask for, where a saved model loads."""

import pytest
import torch

from liftlearn._device import DeviceWarning, map_device, resolve_device


@pytest.mark.parametrize("device", ["meta", "xpu", "mps", "cuda", "cuda:3", "gpu", ""])
def test_devices_this_machine_cannot_run_are_refused_by_name(device):
    with pytest.raises(ValueError, match=rf"device='{device}'" if device else "device="):
        resolve_device(device)


def test_cpu_and_auto_resolve_here():
    assert resolve_device("auto") == torch.device("cpu")  # no GPU on the test machine
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_a_cuda_index_past_the_machine_s_devices_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(ValueError, match=r"device='cuda:1': this machine has 1 CUDA device"):
        resolve_device("cuda:1")


@pytest.mark.parametrize("saved", ["cuda", "cuda:1", "mps", "meta"])
def test_a_model_saved_on_a_device_missing_here_loads_on_the_cpu_with_a_warning(saved):
    with pytest.warns(DeviceWarning, match=rf"fitted on {saved} but .* is not available here"):
        assert map_device(saved) == torch.device("cpu")


def test_a_model_saved_on_a_gpu_index_missing_here_loads_on_cuda0_with_a_warning(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.warns(DeviceWarning, match="fitted on cuda:1, which this machine does not have"):
        assert map_device("cuda:1") == torch.device("cuda", 0)
    assert map_device("cuda:0") == torch.device("cuda", 0)
