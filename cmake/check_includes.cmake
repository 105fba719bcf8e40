# cmake -DROOT=<source tree> -P check_includes.cmake
# Every #include "..." in conf/, tls/, auth/ and gateway/ names its path from the top of the tree
# (conf/, tls/, auth/ or gateway/) and never steps up with "..". The include roots of the floors
# (CMakeLists.txt) then decide what a file may use; a relative path would go around them.
file(GLOB_RECURSE sources RELATIVE ${ROOT}
  ${ROOT}/conf/*.[ch]pp ${ROOT}/tls/*.[ch]pp ${ROOT}/auth/*.[ch]pp ${ROOT}/gateway/*.[ch]pp)
set(problems 0)
foreach(source ${sources})
  file(STRINGS ${ROOT}/${source} includes REGEX "^[ \t]*#[ \t]*include[ \t]*\"")
  foreach(line ${includes})
    string(REGEX REPLACE "^[^\"]*\"([^\"]*)\".*$" "\\1" path "${line}")
    if(NOT path MATCHES "^(conf|tls|auth|gateway)/" OR path MATCHES "(^|/)\\.\\.(/|$)")
      message(NOTICE "${source}: #include \"${path}\": name the header from the top of the tree, e.g. "
        "\"gateway/common/log.hpp\", without \"..\"; the floors in CMakeLists.txt say which folders this one "
        "may include")
      math(EXPR problems "${problems} + 1")
    endif()
  endforeach()
endforeach()
if(problems GREATER 0)
  message(FATAL_ERROR "${problems} include(s) go around the floors of the tree")
endif()
