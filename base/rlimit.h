// Raises this process's open-file limit to the hard limit: a coordinator
// holds one connection per worker, and a farm has thousands of them.
#pragma once

namespace pcfarm {

// Returns the soft limit now in force.
long RaiseOpenFileLimit();

}  // namespace pcfarm
