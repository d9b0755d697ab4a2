//! placeholder: the Python binding (issue 3)
