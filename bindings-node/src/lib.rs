//! placeholder: the Node binding (issue 4)
