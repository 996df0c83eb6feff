#!/bin/sh
# Prints 1 when a C compiler finds jpeglib.h (Debian: libjpeg62-turbo-dev), else 0: binding.gyp then
# builds the JPEG addon (native/src/jpeg.cc) only where it can, and the backend addon either way.
printf '#include <stdio.h>\n#include <jpeglib.h>\nint main(void){return 0;}\n' | ${CC:-cc} -x c - -ljpeg -o /dev/null >/dev/null 2>&1 && echo 1 || echo 0
