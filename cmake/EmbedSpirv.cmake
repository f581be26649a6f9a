# Compiling GLSL compute shaders to SPIR-V with glslc and embedding the words
# in the binary as C++ arrays (no xxd: file(READ ... HEX) in script mode).
#
# As a module: pcfarm_embed_spirv(OUT_VAR NAME name SOURCE file.comp
#   [DEFINES A=1 ...] [INCLUDE_DIR dir]) adds a build rule producing
#   <binary dir>/spirv/<name>.spv.h, which defines
#   `static const uint32_t kSpirv_<name>[]`, and appends that header to OUT_VAR.
# As a script: cmake -DIN=x.spv -DOUT=x.spv.h -DNAME=name -P EmbedSpirv.cmake.

if(CMAKE_SCRIPT_MODE_FILE)
  file(READ "${IN}" hex HEX)
  string(LENGTH "${hex}" len)
  math(EXPR rem "${len} % 8")
  if(len EQUAL 0 OR NOT rem EQUAL 0)
    message(FATAL_ERROR "${IN}: ${len} hex digits is not a whole number of SPIR-V words")
  endif()
  # Little-endian bytes b0 b1 b2 b3 -> word 0xb3b2b1b0.
  string(REGEX REPLACE "([0-9a-f][0-9a-f])([0-9a-f][0-9a-f])([0-9a-f][0-9a-f])([0-9a-f][0-9a-f])"
         "0x\\4\\3\\2\\1u,\n" words "${hex}")
  file(WRITE "${OUT}.tmp"
       "// Generated from ${IN} by cmake/EmbedSpirv.cmake; do not edit.\n"
       "static const uint32_t kSpirv_${NAME}[] = {\n${words}};\n")
  file(RENAME "${OUT}.tmp" "${OUT}")
  return()
endif()

set(PCFARM_EMBED_SPIRV_SCRIPT ${CMAKE_CURRENT_LIST_FILE})

function(pcfarm_embed_spirv out_var)
  cmake_parse_arguments(ARG "" "NAME;SOURCE;INCLUDE_DIR" "DEFINES" ${ARGN})
  set(dir ${CMAKE_CURRENT_BINARY_DIR}/spirv)
  set(spv ${dir}/${ARG_NAME}.spv)
  set(hdr ${dir}/${ARG_NAME}.spv.h)
  set(defs)
  foreach(d IN LISTS ARG_DEFINES)
    list(APPEND defs -D${d})
  endforeach()
  set(inc)
  set(deps)
  if(ARG_INCLUDE_DIR)
    set(inc -I ${ARG_INCLUDE_DIR})
    file(GLOB deps ${ARG_INCLUDE_DIR}/*.glsl)
  endif()
  add_custom_command(
    OUTPUT ${hdr}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${dir}
    COMMAND ${PCFARM_GLSLC} -fshader-stage=compute --target-env=vulkan1.1 -O
            -Werror ${inc} ${defs} -o ${spv} ${ARG_SOURCE}
    COMMAND ${CMAKE_COMMAND} -DIN=${spv} -DOUT=${hdr} -DNAME=${ARG_NAME}
            -P ${PCFARM_EMBED_SPIRV_SCRIPT}
    DEPENDS ${ARG_SOURCE} ${deps} ${PCFARM_EMBED_SPIRV_SCRIPT}
    COMMENT "glslc ${ARG_NAME}"
    VERBATIM)
  set(${out_var} ${${out_var}} ${hdr} PARENT_SCOPE)
endfunction()
