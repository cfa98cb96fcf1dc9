"""Which earlier layers each layer reads: a network's graph, checked in one place.

Layers are numbered from 1, and 0 stands for the input rows. A layer's input is
the concatenation of its sources' outputs in the order listed, so its W has
one column per input in that order. The default for layer k is [k-1]: a chain.

A graph is kept as a full list, one source list per layer (layer k's at
index k-1), or None for the chain, so every chain looks as it always did.
"""
import numbers


def normalize(inputs, n_layers):
    """The graph as a list of source lists, or None when it is the chain.

    inputs: None, {layer: [sources]} (keys int or digit strings, as JSON has
    them), or a full list of source lists. Refuses, with the reason, a source
    that is not an earlier layer, a duplicate source, an empty list, an
    unknown layer, and a hidden layer whose output no later layer reads (it
    would get no gradient)."""
    if inputs is None:
        return None
    if isinstance(inputs, (list, tuple)):
        if len(inputs) != n_layers:
            raise ValueError(f"inputs lists {len(inputs)} layers, the network has {n_layers}")
        inputs = {k + 1: v for k, v in enumerate(inputs)}
    if not isinstance(inputs, dict):
        raise ValueError(f"inputs must map layer numbers to lists of source layers, got {inputs!r}")
    graph = [[k] for k in range(n_layers)]  # layer k+1 reads layer k
    for key, sources in inputs.items():
        layer = _number(key, "layer")
        if not 1 <= layer <= n_layers:
            raise ValueError(f"inputs name layer {key!r}, but the network has layers 1 to {n_layers}")
        if isinstance(sources, (int, str)) and not isinstance(sources, bool):
            sources = [sources]
        if not isinstance(sources, (list, tuple)) or not sources:
            raise ValueError(f"layer {layer} needs one or more sources, got {sources!r}")
        sources = [_number(s, "source") for s in sources]
        for s in sources:
            if not 0 <= s < layer:
                raise ValueError(f"layer {layer} cannot read {s}: a source is an earlier layer, or 0 for the rows")
        if len(set(sources)) != len(sources):
            raise ValueError(f"layer {layer} lists a source twice: {sources}")
        graph[layer - 1] = sources
    for k in range(1, n_layers):
        if not any(k in graph[j] for j in range(k, n_layers)):
            raise ValueError(f"no layer reads layer {k}'s output: each hidden layer must feed a later one")
    return None if graph == [[k] for k in range(n_layers)] else graph


def sources(graph, layer):
    """The sources of layer index `layer` (0-based; sources numbered as above)."""
    return graph[layer] if graph else [layer]


def widths(graph, sizes, layer, rows):
    """The width of each source of layer index `layer`, in order; rows: the input width."""
    return [rows if s == 0 else sizes[s - 1] for s in sources(graph, layer)]


def readers(graph, n_layers, source):
    """The layer indices (0-based) that read source `source` (0: the rows)."""
    return [j for j in range(n_layers) if source in sources(graph, j)]


def rows_end(graph, sizes, layer, rows):
    """The column just after the rows in layer index `layer`'s input (where new input
    columns go), or None when it does not read them."""
    src = sources(graph, layer)
    if 0 not in src:
        return None
    return sum(widths(graph, sizes, layer, rows)[:src.index(0) + 1])


def _number(value, what):
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"a {what} is a layer number, got {value!r}")
    return int(value)
