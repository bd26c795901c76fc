//! Pictures of the graph: Graphviz DOT output and `Display for Tape`.
