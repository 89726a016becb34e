"""The only part of the package that touches the file system: read a model as a skeleton, stream
its tensors, write the result atomically."""
