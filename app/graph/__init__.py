"""Pure workflow data: Graph, file format and validation. Imports neither Qt nor torch."""

from app.graph.io import FORMAT, WorkflowFormatError, dumps, graph_from_dict, graph_to_dict, load, loads, save
from app.graph.model import Graph, GraphError, GraphEvent, Group, Link, NodeInstance, NodeMode, Note
from app.graph.validate import Problem, ValidationError, validate

__all__ = [
    "FORMAT",
    "Graph",
    "GraphError",
    "GraphEvent",
    "Group",
    "Link",
    "NodeInstance",
    "NodeMode",
    "Note",
    "Problem",
    "ValidationError",
    "WorkflowFormatError",
    "dumps",
    "graph_from_dict",
    "graph_to_dict",
    "load",
    "loads",
    "save",
    "validate",
]
