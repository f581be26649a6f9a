#include "base/malloc_tuning.h"

#include <malloc.h>

namespace pcfarm {

void TuneMallocForChunkedIo() {
  mallopt(M_MMAP_THRESHOLD, 4 << 20);
  mallopt(M_TRIM_THRESHOLD, 8 << 20);
}

}  // namespace pcfarm
