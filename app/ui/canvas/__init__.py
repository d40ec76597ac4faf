"""The node canvas: a QGraphicsView of one WorkflowDocument, its items, gestures, palette and minimap."""
