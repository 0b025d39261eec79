"""Every Ray the tests start listens on 127.0.0.1 only (Ray's single-machine mode,
:mod:`rl.ray_setup`). Set here, before any test module imports Ray."""

from rl.ray_setup import keep_local_ray_on_loopback

keep_local_ray_on_loopback()
