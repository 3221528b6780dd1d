"""Noise, the CLI's rule grammar as Python values (docs/noise.md).

    quell.noise.add(0.1, rel="std")                       # additive, sigma relative to std
    quell.noise.mul(0.05, static=True).on("conv1,fc1")    # per-chip multiplicative
    quell.noise.add(0.25, rel="std", static=True) + quell.noise.add(0.125, rel="std")

A component or rule prints as the CLI's text: str(quell.noise.add(0.1, rel="std")) is
"all=add:0.1:rel=std". Every study also takes the rule strings themselves.
"""
import math


def _number(value, what):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number, got {type(value).__name__}")
    if math.isnan(value):
        raise ValueError(f"{what} is NaN")
    if value < 0:
        raise ValueError(f"{what} is negative ({value})")
    return float(value)


def _fmt(v):
    return repr(float(v)).rstrip("0").rstrip(".") if float(v) != int(v) else str(int(v))


class Component:
    """One noise component: KIND:SIGMA[:OPTIONS] in the CLI's grammar."""

    def __init__(self, kind, sigma, *, ratio=None, rel=None, static=False, aging=False,
                 age=None, ref=None, nu=None):
        if kind not in ("add", "mul", "muladd", "addmul"):
            raise ValueError(f"noise kind '{kind}': expected add, mul, muladd or addmul")
        if rel not in (None, "std", "range"):
            raise ValueError(f"rel='{rel}': expected 'std' or 'range'")
        if static and aging:
            raise ValueError("a component is static or aging, not both")
        self.kind, self.sigma = kind, _number(sigma, "sigma")
        self.ratio = None if ratio is None else _number(ratio, "ratio")
        if kind in ("muladd", "addmul") and self.ratio is None:
            raise ValueError(f"{kind} noise needs ratio= (sigma_add = A*r, sigma_mul = A*(1-r))")
        self.rel, self.static, self.aging = rel, static, aging
        self.age, self.ref, self.nu = age, ref, nu

    def _text(self):
        """KIND:SIGMA[:OPTIONS], without the sites (a rule joins these with +)."""
        text = f"{self.kind}:{_fmt(self.sigma)}"
        if self.ratio is not None:
            text += f"/{_fmt(self.ratio)}"
        if self.static:
            text += ":static"
        if self.aging:
            text += ":aging"
        if self.rel:
            text += f":rel={self.rel}"
        for key in ("age", "ref", "nu"):
            value = getattr(self, key)
            if value is not None:
                text += f":{key}={_fmt(value)}"
        return text

    def __str__(self):
        return str(self.on("all"))

    def __add__(self, other):
        return Components([self]) + other

    def on(self, sites="all"):
        """This component at `sites` (all | names, indices and ranges a-b, comma-separated)."""
        return Components([self]).on(sites)

    def __repr__(self):
        return f"quell.noise.{self.kind}: '{self}'"


class Components:
    """Components applied together at the same sites."""

    def __init__(self, parts):
        self.parts = list(parts)

    def __add__(self, other):
        if isinstance(other, Component):
            return Components(self.parts + [other])
        if isinstance(other, Components):
            return Components(self.parts + other.parts)
        return NotImplemented

    def on(self, sites="all"):
        return Rule(sites, self.parts)

    def __str__(self):
        return str(self.on("all"))


class Rule:
    """SITES=COMPONENT[+COMPONENT...]."""

    def __init__(self, sites, parts):
        if not isinstance(sites, str) or not sites:
            raise ValueError(f"sites must be a selector such as 'all' or 'conv1,fc1', got {sites!r}")
        self.sites, self.parts = sites, list(parts)

    def __str__(self):
        return f"{self.sites}=" + "+".join(p._text() for p in self.parts)

    def __repr__(self):
        return f"quell.noise rule '{self}'"


def add(sigma, **options):
    """Additive Gaussian noise x + sigma*n (options: rel="std"|"range", static, aging, age, ref, nu)."""
    return Component("add", sigma, **options)


def mul(sigma, **options):
    """Multiplicative Gaussian noise x*(1 + sigma*n)."""
    return Component("mul", sigma, **options)


def muladd(amplitude, ratio, **options):
    """Mixed noise, multiplicative then additive: sigma_add = A*r, sigma_mul = A*(1-r)."""
    return Component("muladd", amplitude, ratio=ratio, **options)


def addmul(amplitude, ratio, **options):
    """Mixed noise, additive then multiplicative."""
    return Component("addmul", amplitude, ratio=ratio, **options)


def rules(noise):
    """The CLI rule strings of `noise`: a string, a Component/Components/Rule, or a list of them."""
    if noise is None:
        return []
    if isinstance(noise, (str, Component, Components, Rule)):
        noise = [noise]
    if not isinstance(noise, (list, tuple)):
        raise TypeError("noise must be a rule string ('all=add:0.1:rel=std'), a quell.noise "
                        f"value, or a list of them, got {type(noise).__name__}")
    out = []
    for item in noise:
        if isinstance(item, Component) or isinstance(item, Components):
            out.append(str(item.on("all")))
        elif isinstance(item, Rule):
            out.append(str(item))
        elif isinstance(item, str):
            out.append(item)
        else:
            raise TypeError(f"a noise rule must be a string or a quell.noise value, got "
                            f"{type(item).__name__}")
    return out
