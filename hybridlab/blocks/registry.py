"""Block registry: block type name -> Block subclass.

Users add their own block with::

    @hybridlab.register_block("my_mixer")
    class MyMixer(hybridlab.blocks.Block):
        Config = MyMixerConfig
        ...

and list the module under ``plugins:`` in the spec so it is imported before validation. That
import runs code, so it happens only on request (``--allow-plugins``, ``HYBRIDLAB_PLUGINS=1``,
``load_spec(..., allow_plugins=True)``), or import the module yourself first.
"""
from __future__ import annotations

from .base import Block

_REGISTRY: dict[str, type[Block]] = {}


def register_block(name: str):
    def deco(cls: type[Block]) -> type[Block]:
        if not (isinstance(cls, type) and issubclass(cls, Block)):
            raise TypeError(f"register_block({name!r}) expects a Block subclass, got {cls!r}")
        _REGISTRY[name] = cls
        cls.type_name = name
        return cls

    return deco


def get_block(name: str) -> type[Block]:
    return _REGISTRY[name]


def block_types() -> list[str]:
    return sorted(_REGISTRY)
