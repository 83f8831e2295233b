"""The pytest plugin on a sample user folder: parity_*.toml files become one item per backend and
dtype; a failing spec names the parameter, the step and the difference."""

from __future__ import annotations

from crossnn import examples

pytest_plugins = ["pytester"]

LINEAR = examples.path("linear-2x3").read_text()
TWO_TOWER = examples.path("two-tower").read_text()


def test_spec_files_become_items_per_backend_and_dtype(pytester):
    pytester.makefile(".toml", parity_linear=LINEAR, parity_towers=TWO_TOWER, notes="not a spec")
    pytester.makeini("[pytest]\ncrossnn_backends = numpy\ncrossnn_dtypes = float64,float32\n")
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*parity_linear.toml::numpy-float64 PASSED*",
                                 "*parity_linear.toml::numpy-float32 PASSED*",
                                 "*parity_towers.toml::numpy-float32 PASSED*"])


def test_failing_spec_names_parameter_and_step(pytester):
    pytester.makefile(".toml", parity_linear=LINEAR)
    pytester.makeini("[pytest]\ncrossnn_backends = numpy\ncrossnn_dtypes = float32\n"
                     "crossnn_rtol = 1e-12\ncrossnn_atol = 0\n")
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*numpy float32 cpu default: parameter fc/* leaves tolerance at step 1: "
                                 "largest difference *e-0* (relative *); rtol 1e-12, atol 0*"])


def test_unknown_backend_is_a_collection_error_naming_the_setting_and_the_installed_list(pytester):
    pytester.makefile(".toml", parity_linear=LINEAR)
    pytester.makeini("[pytest]\ncrossnn_backends = numpy,nosuchbackend\n")
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*crossnn_backends in tox.ini: unknown backend 'nosuchbackend'; installed: numpy*"])


def test_bad_spec_file_is_a_one_line_collection_error(pytester):
    pytester.makefile(".toml", parity_bad=LINEAR.replace("units = 1", "units = 0"))
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.re_match_lines([r".*parity_bad\.toml: model\.layers\[0\]\.units: must be > 0, got 0$"])
    result.stdout.no_fnmatch_line("*Traceback*")


def test_command_line_options_override_the_ini(pytester):
    pytester.makefile(".toml", parity_linear=LINEAR)
    result = pytester.runpytest("--crossnn-backends", "numpy", "--crossnn-dtypes", "float32")
    result.assert_outcomes(passed=1)
