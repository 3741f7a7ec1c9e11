"""Plugin block modules a copied model needs imported (registering their blocks).

In hybridlab this is empty: the spec loader imports plugins. The fallback export replaces this
file with one that imports the plugin modules it copied next to the blocks.
"""
PLUGINS: tuple[str, ...] = ()
