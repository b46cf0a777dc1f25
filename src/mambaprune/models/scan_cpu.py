"""CPU selective scan. Placeholder until the fast path lands: delegates to the reference loop."""

from __future__ import annotations


def selective_scan_cpu(u, delta, A, B, C, D, z=None, delta_bias=None):
    from .scan import selective_scan_ref

    return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias)
