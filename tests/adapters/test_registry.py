import pytest

from adapters.components import component_of
from adapters.errors import UnknownNameError
from adapters.registry import Registry
from adapters.sources import ModelSource


def test_unknown_name_lists_close_matches():
    reg: Registry[int] = Registry("widget")
    reg.register("prune.magnitude", 1)
    reg.register("prune.wanda", 2)
    with pytest.raises(UnknownNameError) as info:
        reg.get("prune.magnitud")
    msg = str(info.value)
    assert "\n" not in msg
    assert "did you mean 'prune.magnitude'" in msg
    assert "prune.wanda" in msg  # the list of names


def test_duplicate_registration_raises():
    reg: Registry[int] = Registry("widget")
    reg.register("a", 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", 2)


def test_unknown_model_source_names_close_builtin():
    with pytest.raises(UnknownNameError, match="did you mean 'smollm2-135m-instruct'"):
        ModelSource.parse("smollm2-135m-instruc")


def test_component_of_family():
    assert component_of("quant.awq").key == "quantization"
    assert component_of("peft.lora").key == "peft"
    with pytest.raises(ValueError, match="belongs to no lifecycle component"):
        component_of("bogus.x")
