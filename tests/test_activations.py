"""Activations: built-ins resolve, derivatives are right, stable jax forms equal the definition."""

import math

import numpy as np
import pytest
import sympy as sp

from kernelcalc.theory.activations import BUILTIN_NAMES, Activation, ActivationError, X, resolve_activation


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_every_builtin_resolves(name):
    act = resolve_activation(name)
    assert isinstance(act, Activation)
    assert act.builtin is not None
    assert act.expr.free_symbols <= {X}
    assert resolve_activation(act) is act


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_derivative_matches_finite_differences(name):
    act = resolve_activation(name)
    x = np.linspace(-3.0, 3.0, 61) + 0.0137  # avoids the kink at 0
    h = 1e-6
    fd = (act.numpy_fn(x + h) - act.numpy_fn(x - h)) / (2 * h)
    np.testing.assert_allclose(act.numpy_derivative(x), fd, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", BUILTIN_NAMES)
@pytest.mark.usefixtures("x64")      # jax_fn follows the caller's precision: float64 here
def test_jax_callables_agree_with_symbolic_definition(name):
    # checks the hand-written stable overrides (softplus, sigmoid, silu) against sympy's expression
    act = resolve_activation(name)
    x = np.linspace(-30.0, 30.0, 1201)
    np.testing.assert_allclose(np.asarray(act.jax_fn(x)), act.numpy_fn(x), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(act.jax_derivative(x)), act.numpy_derivative(x), rtol=1e-12, atol=1e-12)


def test_known_values():
    # independent values: softplus(0) = log 2, sigmoid'(0) = 1/4, gelu(1) = Phi(1), silu(1) = 1/(1+e^-1)
    assert float(resolve_activation("softplus").numpy_fn(np.array(0.0))) == pytest.approx(math.log(2), abs=1e-15)
    assert float(resolve_activation("sigmoid").numpy_derivative(np.array(0.0))) == pytest.approx(0.25, abs=1e-15)
    phi1 = 0.5 * (1 + math.erf(1 / math.sqrt(2)))
    assert float(resolve_activation("gelu").numpy_fn(np.array(1.0))) == pytest.approx(phi1, abs=1e-15)
    assert float(resolve_activation("swish").numpy_fn(np.array(1.0))) == pytest.approx(1 / (1 + math.exp(-1)), abs=1e-15)
    assert resolve_activation("softplus").derivative.equals(1 / (1 + sp.exp(-X)))


def test_unknown_name_lists_known_names():
    with pytest.raises(ActivationError) as err:
        resolve_activation("foo")
    msg = str(err.value)
    assert "foo" in msg
    for name in ("relu", "softplus", "tanh", "gelu"):
        assert name in msg
    with pytest.raises(ActivationError, match="known"):
        Activation.from_name("nope")


@pytest.mark.parametrize("text", ["x +* 2", "exp(x", "x**", ""])
def test_unparsable_expression_raises(text):
    with pytest.raises(ActivationError):
        resolve_activation(text)


def test_other_free_symbol_raises():
    with pytest.raises(ActivationError, match="y"):
        resolve_activation("x + y")
    with pytest.raises(ActivationError):
        Activation.from_expr(sp.Symbol("z") * X)


def test_param_parsing():
    act = resolve_activation("elu(alpha=0.5)")
    assert act.builtin == "elu" and act.param("alpha") == 0.5
    assert float(act.numpy_fn(np.array(-1.0))) == pytest.approx(0.5 * (math.exp(-1) - 1), abs=1e-15)
    assert float(act.numpy_fn(np.array(2.0))) == 2.0
    assert resolve_activation("leaky_relu(0.2)").param("alpha") == 0.2
    assert resolve_activation("leaky_relu").param("alpha") == 0.01
    assert resolve_activation("elu").param("alpha") == 1.0
    with pytest.raises(ActivationError, match="beta"):
        resolve_activation("elu(beta=1)")
    with pytest.raises(ActivationError):
        resolve_activation("elu(alpha=abc)")
    with pytest.raises(ActivationError):
        resolve_activation("elu(alpha=inf)")


def test_user_expression():
    act = Activation.from_expr("log(1+exp(x))")
    assert act.builtin is None and not act.is_polynomial
    assert sp.simplify(act.expr - resolve_activation("softplus").expr) == 0
    cube = resolve_activation("x**3 - x")
    assert cube.is_polynomial and cube.polynomial_degree == 3
    assert resolve_activation("relu").is_piecewise_smooth and not resolve_activation("tanh").is_piecewise_smooth


def test_builtin_name_applied_to_expression_is_an_expression():
    # regression: "tanh(x/2)" used to be read as tanh with a parameter "x/2" and raise
    act = resolve_activation("tanh(x/2)")
    assert act.builtin is None and act.expr == sp.tanh(X / 2)
    assert resolve_activation("sin(2*x)").expr == sp.sin(2 * X)
    assert float(resolve_activation("erf(x)").numpy_fn(np.array(0.5))) == pytest.approx(math.erf(0.5), abs=1e-15)


# ---------------------------------------------------------------------------- safe parsing (issue 10, part 4)
from scipy import special  # noqa: E402  (independent numeric references)

import kernelcalc as kc  # noqa: E402
from kernelcalc.theory.activations import MAX_EXPONENT, MAX_TEXT_LENGTH, parse_expression  # noqa: E402

_GRID = np.linspace(-3.0, 3.0, 41) + 0.0137  # avoids kinks at 0 and 1


@pytest.mark.parametrize("text, ref", [
    ("x*erf(x/sqrt(2))/2 + x/2", lambda x: x * 0.5 * (1 + special.erf(x / math.sqrt(2)))),
    ("log(1+exp(x))", lambda x: np.logaddexp(0.0, x)),
    ("tanh(x/2)", lambda x: np.tanh(x / 2)),
    ("Max(0, x)", lambda x: np.maximum(0.0, x)),
    ("max(0, x) - min(0, 2*x)", lambda x: np.maximum(0.0, x) - np.minimum(0.0, 2 * x)),
    ("Min(x, 1, x**2)", lambda x: np.minimum(np.minimum(x, 1.0), x**2)),
    ("abs(x) + Abs(x)", lambda x: 2 * np.abs(x)),
    ("x**2", lambda x: x**2),
    ("x**3 - x", lambda x: x**3 - x),
    ("-x**2 + +x", lambda x: -(x**2) + x),
    ("x**-2 + 2**x", lambda x: x**-2.0 + 2.0**x),
    ("1/(1 + x**2) - 1e-3*x", lambda x: 1 / (1 + x**2) - 1e-3 * x),
    ("sqrt(1 + x**2)", lambda x: np.sqrt(1 + x**2)),
    ("sin(x) + cos(x) + tan(x/4)", lambda x: np.sin(x) + np.cos(x) + np.tan(x / 4)),
    ("sinh(x) - cosh(x)", lambda x: -np.exp(-x)),
    ("atan(x) + arctan(2*x) + asinh(x) + arcsinh(x)", lambda x: np.arctan(x) + np.arctan(2 * x) + 2 * np.arcsinh(x)),
    ("erf(x) + erfc(x)", lambda x: np.ones_like(x)),
    ("sign(x) + Heaviside(x) + floor(x) + ceiling(x)",
     lambda x: np.sign(x) + (x > 0) + np.floor(x) + np.ceil(x)),
    ("pi*x + E + exp(1)", lambda x: math.pi * x + 2 * math.e),
    ("sigmoid(2*x) + softplus(-x)", lambda x: 1 / (1 + np.exp(-2 * x)) + np.logaddexp(0.0, -x)),
    ("relu(x - 1) + gelu(x) + silu(x) + swish(x)",
     lambda x: np.maximum(0.0, x - 1) + x * 0.5 * (1 + special.erf(x / math.sqrt(2))) + 2 * x / (1 + np.exp(-x))),
    ("Piecewise((x, x >= 0), (0.1*x, True))", lambda x: np.where(x >= 0, x, 0.1 * x)),
    ("Piecewise((x, 0 <= x < 1), (1, x >= 1), (0, True))", lambda x: np.clip(x, 0.0, 1.0)),
    ("Piecewise((x, (x > 0) & (x < 1) | (x > 2)), (-x, True))",
     lambda x: np.where(((x > 0) & (x < 1)) | (x > 2), x, -x)),
    ("Piecewise((x, x > 0 and not x > 1), (0, x <= 0 or x > 1))", lambda x: np.where((x > 0) & (x <= 1), x, 0.0)),
])
def test_grammar_accepts_ordinary_expressions(text, ref):
    act = resolve_activation(text)
    assert act.builtin is None and act.name == text
    np.testing.assert_allclose(act.numpy_fn(_GRID), ref(_GRID), rtol=1e-13, atol=1e-13)
    assert Activation.from_expr(text).expr == act.expr == parse_expression(text)


def test_numbers_are_exact_where_sympy_would_be():
    assert resolve_activation("x/3").expr == X / 3  # a Rational, not 0.333...
    assert resolve_activation("x**(1/2)").expr == sp.sqrt(X)
    assert resolve_activation("2*x + 1").expr == 2 * X + 1
    assert resolve_activation(f"x**{MAX_EXPONENT}").expr == X**MAX_EXPONENT
    assert resolve_activation(f"x**-{MAX_EXPONENT}").expr == X**-MAX_EXPONENT
    assert resolve_activation("x*2**-200 + 10**200").expr == X / sp.Integer(2) ** 200 + sp.Integer(10) ** 200


_REJECTED = [  # (text, a word the one-line message must contain)
    ("lambda x: x", "'lambda' is not allowed"),
    ("__import__('os').system('touch F')", "attribute access ('.system')"),
    ("__import__('os')", "unknown function '__import__'"),
    ("x.real", "attribute access ('.real')"),
    ("x.__class__.__mro__", "attribute access"),
    ("[x][0]", "subscripts"),
    ("'x'", "a string"),
    ("x + 'a'", "a string"),
    ("b'x'", "bytes"),
    ("x % 2", "'%'"),
    ("x // 2", "'//'"),
    ("x @ x", "'@'"),
    ("x ^ 2", "'^'"),
    ("~x", "'~'"),
    ("not x", "'not'"),
    ("x and 1", "'and' outside a Piecewise condition"),
    ("x > 0", "comparison '>' outside a Piecewise condition"),
    ("True*x", "True outside a Piecewise condition"),
    ("None", "None"),
    ("1j*x", "complex number 1j"),
    ("x if x > 0 else 0", "'if ... else ...'"),
    ("[x for x in (1, 2)]", "comprehension"),
    ("(x, x)", "a tuple"),
    ("{x}", "a set"),
    ("f'{x}'", "f-string"),
    ("(y := x)", "':='"),
    ("(lambda: x)()", "calling anything but a named function"),
    ("Max(*[x, 0])", "'*' unpacking"),
    ("exp(x, base=2)", "keyword argument ('base=')"),
    ("exp(**{'x': 1})", "'**' unpacking"),
    ("exp(x, x)", "exp takes 1 argument, got 2"),
    ("Min(x)", "Min takes at least 2 arguments, got 1"),
    ("foo(x)", "unknown function 'foo'"),
    ("eval('x')", "unknown function 'eval'"),
    ("exec('import os')", "unknown function 'exec'"),
    ("open('F', 'w')", "unknown function 'open'"),
    ("getattr(x, 'real')", "unknown function 'getattr'"),
    ("x + y", "unknown name 'y'"),
    ("e*x", "E or exp(1)"),
    ("x + inf", "unknown name 'inf'"),
    ("x + exp", "'exp' is a function"),
    ("x + elu", "'elu' is a built-in activation"),
    ("leaky_relu(x)", "cannot be applied to an expression in x"),
    ("x**10**10", "exponent 1e+10 is too large"),
    ("x**(10**10)", "exponent 1e+10 is too large"),
    ("exp(x)**(-101)", "exponent -101 is too large"),
    ("10**10**10", "out of range"),
    ("x*10**-400", "out of range"),
    ("(10**100)**100", "out of range"),
    ("1e300*1e300*x", "size at most 1e300"),
    ("1e999*x", "not finite"),
    ("-" * 60 + "x", "nested too deeply"),
    ("Piecewise(x)", "pair (expression, condition)"),
    ("Piecewise((x, x))", "Piecewise condition must be a comparison"),
    ("Piecewise((x, x is 0), (0, True))", "'is'"),
    ("Piecewise()", "at least one"),
    ("x +* 2", "cannot parse"),
    ("exp(x", "cannot parse"),
    ("log(1+", "'(' was never closed"),
    ("x**", "cannot parse"),
    ("x\n+1", "cannot parse"),
    ("x\x00", "cannot parse"),
    ("(" * 300 + "x" + ")" * 300, "cannot parse"),
    ("x" + "+x" * 500, f"at most {MAX_TEXT_LENGTH}"),
    ("1/0", "not a finite real number"),
    ("x + exp(exp(exp(100)))", "not a finite real number"),
    ("x**exp(exp(exp(100)))", "not a finite real number"),
    ("Max(0, x, exp(exp(exp(100))))", "not a finite real number"),
    ("Piecewise((x, x > exp(exp(exp(100)))), (0, True))", "not a finite real number"),
    ("x*" + "9" * 400, "larger than 1e300"),
    ("log(-1)*x", "not a finite real number"),
    ("(-1)**0.5*x", "not a finite real number"),
]


@pytest.mark.parametrize("text, needle", _REJECTED)
def test_code_like_and_malformed_text_is_rejected_in_one_line(text, needle):
    for parse in (resolve_activation, Activation.from_expr):
        with pytest.raises(ActivationError) as err:
            parse(text)
        msg = str(err.value)
        assert needle in msg, msg
        assert "\n" not in msg and len(msg) < 400
        for internal in ("Sympify", "sympify", "TokenError", "tokenize", "Traceback", "sympy"):
            assert internal not in msg, msg


def test_longest_accepted_text_and_deepest_accepted_nesting():
    text = "x" + "+x" * ((MAX_TEXT_LENGTH - 1) // 2)  # 999 characters
    assert len(text) <= MAX_TEXT_LENGTH and resolve_activation(text).expr == ((MAX_TEXT_LENGTH + 1) // 2) * X
    deep = "-" * 40 + "x"
    assert resolve_activation(deep).expr == X


def _injections(target):
    t = str(target)
    return [f"__import__('os').system('touch {t}')",
            f"__import__('pathlib').Path('{t}').touch()",
            f"open('{t}', 'w').close()",
            f"exec(\"open('{t}', 'w')\")",
            f"(lambda: open('{t}', 'w'))()",
            f"x + (__import__('os').system('touch {t}') or 0)",
            f"Max(0, x) if open('{t}', 'w') else x",
            f"[c for c in ().__class__.__base__.__subclasses__() if open('{t}', 'w')]",
            f"tanh(x).__class__.__init__.__globals__['os'].system('touch {t}')",
            f"elu(alpha=__import__('os').system('touch {t}'))"]


def test_code_injection_has_no_side_effect_in_the_api(tmp_path, monkeypatch):
    # before the whitelist parser, sympify evaluated the text and these created the file
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "F"
    X2 = np.array([[1.0, 1.0], [1.0, -1.0]])
    for text in _injections(target) + ["__import__('os').system('touch F')"]:
        for call in (resolve_activation, Activation.from_expr, kc.analyse, lambda t: kc.derive(t),
                     lambda t: kc.node_kernel(X2, activation=t), lambda t: kc.mlp_kernel(X2, activation=t, depth=1)):
            with pytest.raises(ActivationError):
                call(text)
        assert not target.exists() and not (tmp_path / "F").exists(), text
    assert list(tmp_path.iterdir()) == []


def test_parser_module_never_evaluates_text():
    # structural guard: no eval/exec/sympify/parse_expr/S() call anywhere in the activation modules
    import ast
    import inspect

    import kernelcalc.theory._activation_text as parser
    import kernelcalc.theory.activations as mod

    names, attrs = set(), set()
    for node in ast.walk(ast.parse(inspect.getsource(mod) + "\n" + inspect.getsource(parser))):
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name):
                names.add(node.func.id)
            elif isinstance(node.func, ast.Attribute):
                attrs.add(node.func.attr)
    assert "Call" in {type(n).__name__ for n in ast.walk(ast.parse("f(x)"))} and "parse" in attrs  # the walk works
    assert not names & {"eval", "exec", "compile", "sympify", "parse_expr", "S", "__import__"}, names
    assert not attrs & {"eval", "exec", "sympify", "parse_expr", "S", "parse_latex"}, attrs


@pytest.mark.parametrize("text, message", [
    ("leaky_relu(0.1, 0.2)", "leaky_relu takes 1 parameter (alpha), got 2"),
    ("elu(1, 2, 3)", "elu takes 1 parameter (alpha), got 3"),
    ("tanh(0.5)", "tanh takes no parameters, got 1"),
    ("relu(beta=1)", "takes no parameter 'beta'; it takes no parameters"),
    ("elu(beta=1)", "takes no parameter 'beta'; it takes 1 parameter (alpha)"),
    ("elu(0.5, alpha=1)", "gives parameter alpha twice"),
    ("elu(alpha=x)", "parameter alpha of elu must be a number, got 'x'"),
    ("elu(alpha=abc)", "parameter alpha of elu must be a number, got 'abc'"),
    ("elu(alpha=inf)", "must be a number, got 'inf'"),
    ("elu(alpha=nan)", "must be a number, got 'nan'"),
    ("elu(alpha=exp(1))", "must be a number, got 'exp(1)'"),
    ("elu(alpha=1e400)", "not finite"),
    ("elu(alpha=1j)", "complex number 1j"),
    ("elu(alpha=True)", "True"),
    ("elu(alpha='0.5')", "a string"),
    ("leaky_relu(1/0)", "not a finite real number"),
    ("elu(*[1])", "unpacking"),
])
def test_builtin_parameter_errors_name_the_parameter(text, message):
    with pytest.raises(ActivationError) as err:
        resolve_activation(text)
    assert message in str(err.value) and "'?'" not in str(err.value)


def test_builtin_parameters_parsed_as_numbers():
    assert resolve_activation("elu(alpha=-1)").param("alpha") == -1.0
    assert resolve_activation("leaky_relu(1/3)").param("alpha") == pytest.approx(1 / 3, abs=1e-16)
    assert resolve_activation("leaky_relu(alpha=2*0.1)").param("alpha") == pytest.approx(0.2, abs=1e-16)
    assert resolve_activation("elu(alpha=pi/4)").param("alpha") == pytest.approx(math.pi / 4, abs=1e-16)
    lr = resolve_activation("Leaky-ReLU(0.2)")
    assert lr.builtin == "leaky_relu" and lr.param("alpha") == 0.2
    assert float(lr.numpy_fn(np.array(-2.0))) == pytest.approx(-0.4, abs=1e-15)
    assert resolve_activation("relu()").builtin == "relu"
    for bad in ("abc", True, float("nan"), 1j, None, "0.5"):
        with pytest.raises(ActivationError, match="alpha of elu must be a finite real number"):
            Activation.from_name("elu", alpha=bad)
    assert Activation.from_name("elu", alpha=np.float32(0.5)).param("alpha") == 0.5


def test_sympy_objects_from_python_are_taken_as_they_are():
    y = sp.Symbol("x")  # a plain (not real) symbol named x becomes X
    act = resolve_activation(sp.Max(0, y) + sp.sin(y) ** 2)
    assert act.expr == sp.Max(0, X) + sp.sin(X) ** 2
    assert Activation.from_expr(sp.Lambda(y, y)(X)).expr == X  # built in Python: code, not text
    custom = Activation.from_expr(sp.asin(sp.tanh(X)))  # asin is outside the text grammar; fine from Python
    assert float(custom.numpy_fn(np.array(0.5))) == pytest.approx(math.asin(math.tanh(0.5)), abs=1e-15)
    with pytest.raises(ActivationError, match="unknown function 'asin'"):
        resolve_activation("asin(tanh(x))")


@pytest.mark.parametrize("text, c", [("0", 0.0), ("x*0", 0.0), ("1.5", 1.5), ("sin(x)**2 + cos(x)**2", 1.0)])
def test_constant_activation_gives_a_clean_report(text, c):
    act = resolve_activation(text)
    if act.is_polynomial:
        assert act.polynomial_degree == 0
    r = kc.analyse(act)
    assert r.holds is False and r.nonlinear.holds is False and r.non_polynomial.holds is False
    assert "Assumption 1 fails" in r.summary
    assert float(np.max(np.abs(act.numpy_fn(_GRID) - c))) < 1e-14


def test_zero_activation_kernels_vanish():
    # phi = 0: the output v.phi(h_T)/sqrt(n) is 0 for every parameter, so NNGP = NTK = 0 exactly
    # (this raised ZeroDivisionError in node_kernel's M selection, 0/0)
    X3 = np.array([[1.0, 1.0], [1.0, -1.0], [math.sqrt(2), 0.0]])
    K = kc.node_kernel(X3, activation="0", sigma_v=2.0)
    assert np.all(K.nngp == 0.0) and np.all(K.ntk == 0.0)
    report = kc.check(X3, activation="0")
    assert report.ok is False and any("Assumption 1" in p for p in report.problems)


@pytest.mark.parametrize("expr, odd", [
    ("Max(-1,Min(1,x))", True),                              # hardtanh: sympy leaves phi(-x) + phi(x) unsimplified
    ("Piecewise((x, Abs(x) < 1), (sign(x), True))", True),
    ("x + Max(x - 1, 0) - Max(-x - 1, 0)", True),
    ("Max(-1, Min(1, x)) + 0.1*x", True),
    ("tanh", True),
    ("Min(Max(x, 0), 6)", False),                            # relu6
    ("Max(-1, Min(2, x))", False),                           # breakpoints not mirrored
    ("Max(-1, Min(1, x)) + 0.1*Abs(x)", False),              # mirrored breakpoints, an even part
    ("Piecewise((x, x > 0), (0.5*tanh(x), True))", False),
    ("relu", False),
])
def test_is_odd_of_piecewise_activations(expr, odd):
    """``is_odd`` (which halves a Gram's solves and mirrors its theta table) against a dense numeric check of
    phi(-z) = -phi(z), away from the breakpoints (a proof, not the numbers, decides; they must agree)."""
    from kernelcalc.theory.activations import resolve_activation

    act = resolve_activation(expr)
    z = np.linspace(-7.3, 7.3, 1001) + 1e-3
    numeric = bool(np.allclose(act.numpy_fn(-z), -act.numpy_fn(z), rtol=1e-13, atol=1e-13))
    assert act.is_odd == odd == numeric
