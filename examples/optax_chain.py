"""Chain jaxlearn's update rules with optax transforms on a Flax-style parameter tree.

    python examples/optax_chain.py [--quick]

A two-layer network whose parameters are nested as Flax writes them
(``{"params": {"Dense_0": {"kernel", "bias"}, ...}}``), trained on a synthetic spiral data
set with ``optax.chain(optax.clip_by_global_norm(1.0), jaxlearn.adam(schedule))`` where the
schedule halves the learning rate every 100 steps. Prints the loss and accuracy as it goes.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import optax

import jaxlearn


def spiral(key: jax.Array, per_class: int = 100, classes: int = 3):
    """The notes' spiral data set: ``classes`` interleaved arms in 2-D."""
    n = per_class * classes
    cls = jnp.repeat(jnp.arange(classes), per_class)
    r = jnp.tile(jnp.linspace(0.0, 1.0, per_class), classes)
    t = cls * 4.0 + jnp.tile(jnp.linspace(0.0, 4.0, per_class), classes)
    t = t + 0.2 * jax.random.normal(key, (n,))
    x = jnp.stack([r * jnp.sin(t), r * jnp.cos(t)], axis=1)
    return x, cls.astype(jnp.int32)


def init(key: jax.Array, hidden: int = 100, classes: int = 3):
    k1, k2 = jax.random.split(key)
    return {
        "params": {
            "Dense_0": {
                "kernel": jax.random.normal(k1, (2, hidden)) * jnp.sqrt(2.0 / 2),
                "bias": jnp.zeros(hidden),
            },
            "Dense_1": {
                "kernel": jax.random.normal(k2, (hidden, classes)) * 0.01,
                "bias": jnp.zeros(classes),
            },
        }
    }


def apply(variables, x):
    p = variables["params"]
    h = jax.nn.relu(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
    return h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few steps only")
    args = parser.parse_args(argv)
    steps = 60 if args.quick else 600

    x, y = spiral(jax.random.key(0))
    variables = init(jax.random.key(1))
    schedule = jaxlearn.step_decay(1e-2, step_size=100, factor=0.5)
    opt = optax.chain(optax.clip_by_global_norm(1.0), jaxlearn.adam(schedule))
    state = opt.init(variables)

    def loss_fn(v):
        return jaxlearn.softmax_cross_entropy(apply(v, x), y) + 1e-3 * jaxlearn.l2_penalty(v)

    @jax.jit
    def step(v, s):
        loss, g = jax.value_and_grad(loss_fn)(v)
        u, s = opt.update(g, s, v)
        return optax.apply_updates(v, u), s, loss

    for i in range(steps):
        variables, state, loss = step(variables, state)
        if i % (steps // 6) == 0 or i == steps - 1:
            acc = jaxlearn.accuracy(apply(variables, x), y)
            adam_state = state[1]
            print(
                f"step {i:4d}  loss {float(loss):.4f}  train accuracy {float(acc):.3f}  "
                f"lr {float(schedule(adam_state.t)):.2e}"
            )
    return float(jaxlearn.accuracy(apply(variables, x), y))


if __name__ == "__main__":
    main()
