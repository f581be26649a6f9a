# Shared build helpers: warnings and sanitizers for our code, and the one
# function every unit test is registered with.

set(PCFARM_WARNINGS -Wall -Wextra -Werror)

if(PCFARM_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer
                      -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()

# pcfarm_library(NAME SOURCES... [LIBS ...]): a static library of our code,
# built with the house warnings.
function(pcfarm_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;LIBS" ${ARGN})
  add_library(${name} STATIC ${ARG_SOURCES} ${ARG_UNPARSED_ARGUMENTS})
  target_compile_options(${name} PRIVATE ${PCFARM_WARNINGS})
  target_link_libraries(${name} PUBLIC ${ARG_LIBS})
endfunction()

# pcfarm_executable(NAME SOURCES... [LIBS ...])
function(pcfarm_executable name)
  cmake_parse_arguments(ARG "" "" "SOURCES;LIBS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES} ${ARG_UNPARSED_ARGUMENTS})
  target_compile_options(${name} PRIVATE ${PCFARM_WARNINGS})
  target_link_libraries(${name} PRIVATE ${ARG_LIBS})
endfunction()

# pcfarm_add_test(NAME SOURCES... [LIBS ...] [LABELS ...] [TIMEOUT s]):
# a Catch2 test program registered with ctest under NAME.
function(pcfarm_add_test name)
  cmake_parse_arguments(ARG "" "TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES} ${ARG_UNPARSED_ARGUMENTS})
  target_compile_options(${name} PRIVATE ${PCFARM_WARNINGS})
  target_link_libraries(${name} PRIVATE pcfarm_catch_main ${ARG_LIBS})
  add_test(NAME ${name} COMMAND ${name})
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  set_tests_properties(${name} PROPERTIES TIMEOUT ${ARG_TIMEOUT}
    ENVIRONMENT "PCFARM_BIN_DIR=${CMAKE_BINARY_DIR}/bin")
  if(ARG_LABELS)
    set_tests_properties(${name} PROPERTIES LABELS "${ARG_LABELS}")
  endif()
endfunction()

if(NOT TARGET pcfarm_catch_main)
  add_library(pcfarm_catch_main STATIC ${CMAKE_CURRENT_LIST_DIR}/catch_main.cc)
  target_link_libraries(pcfarm_catch_main PUBLIC Catch2::Catch2)
endif()

set(CMAKE_RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
