# version_check.cmake - what the installed fp8moeConfigVersion.cmake must
# accept and refuse, relative to the version found. Included by
# CMakeLists.txt when FP8MOE_CONSUMER_CHECK_VERSIONS is on (the CI script
# sets it); a user copying the consumer can drop this file.
set(_M ${fp8moe_VERSION_MAJOR})
set(_m ${fp8moe_VERSION_MINOR})
math(EXPR _next_minor "${_m} + 1")
math(EXPR _next_major "${_M} + 1")
set(_accept "${_M}.${_m}" "${fp8moe_VERSION}" "${_M}.${_m}...<${_M}.${_next_minor}" "0.0...${_next_major}.0")
set(_refuse "${_M}.${_next_minor}" "${_next_major}.0" "${_M}.${_next_minor}...${_next_major}.0")
if(_M EQUAL 0 AND _m GREATER 0)
  list(APPEND _refuse "0.0") # before 1.0 a minor release may break the API
endif()
foreach(_req IN LISTS _accept _refuse)
  find_package(fp8moe ${_req} QUIET)
  if(_req IN_LIST _accept)
    set(_want TRUE)
  else()
    set(_want FALSE)
  endif()
  if((_want AND NOT fp8moe_FOUND) OR (NOT _want AND fp8moe_FOUND))
    message(FATAL_ERROR "find_package(fp8moe ${_req}): found=${fp8moe_FOUND}, expected ${_want} (installed ${fp8moe_VERSION})")
  endif()
endforeach()
message(STATUS "fp8moe version file: accepts ${_accept}; refuses ${_refuse}")
# leave the state of a successful find_package(fp8moe) behind
find_package(fp8moe ${fp8moe_VERSION} REQUIRED)
