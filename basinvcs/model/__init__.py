"""Everything that imports torch: substrates, the chart projection, model files, the model bridge,
training in the basin and the generated tasks. Commands that need no model never import this."""
