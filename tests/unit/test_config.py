import pytest

from duet_lib.config import (
    PROFILES,
    ParameterError,
    check_profile,
    profile_values,
    validate_params,
)


def test_valid_parameters_pass_through():
    params = {
        "profile": "smoke",
        "seed": 3,
        "device": "cpu",
        "lr": 1e-3,
        "data_root": None,
    }
    assert validate_params(**params) == params


def test_unknown_profile_lists_valid_ones():
    with pytest.raises(ParameterError) as err:
        validate_params(profile="fast")
    for name in PROFILES:
        assert name in str(err.value)


def test_unknown_parameter_lists_valid_names():
    with pytest.raises(ParameterError, match="unknown parameter 'sed'.*seed"):
        validate_params(sed=1)


@pytest.mark.parametrize(
    "name,value",
    [
        ("seed", -1),
        ("seed", 1.5),
        ("seed", True),
        ("device", "gpu"),
        ("lr", float("nan")),
        ("batch_size", 0),
        ("quiet", "yes"),
    ],
)
def test_bad_values_are_refused(name, value):
    with pytest.raises(ParameterError, match=name):
        validate_params(**{name: value})


def test_all_problems_in_one_message():
    with pytest.raises(ParameterError) as err:
        validate_params(seed=-1, device="gpu")
    assert "seed" in str(err.value) and "device" in str(err.value)


def test_profile_values_are_restricted_to_declared_names():
    vals = profile_values("smoke", {"profile": "teach", "seed": 0, "max_steps": 100})
    assert vals == {"profile": "smoke", "max_steps": 3}
    assert profile_values("teach", {"profile": "teach"}) == {"profile": "teach"}


def test_check_profile():
    assert check_profile("paper") == "paper"
    with pytest.raises(ParameterError):
        check_profile("Paper")
