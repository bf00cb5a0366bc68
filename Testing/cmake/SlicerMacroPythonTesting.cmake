# Stand-in for slicer_add_python_unittest of Slicer's CMake/SlicerMacroPythonTesting.cmake: registers the ctest
# "py_<TESTNAME_PREFIX><script name>" with the command Slicer would run (the launcher, the extension's module
# folders, slicer.testing.runUnitTest on the script's folders). With no Slicer here it can be listed, not run.

function(slicer_add_python_unittest)
  cmake_parse_arguments(MY "" "TESTNAME_PREFIX;SCRIPT" "SLICER_ARGS" ${ARGN})
  get_filename_component(test_name ${MY_SCRIPT} NAME_WE)
  get_filename_component(script_dir ${MY_SCRIPT} PATH)
  if("${script_dir}" STREQUAL "")
    set(script_dir ${CMAKE_CURRENT_SOURCE_DIR})
  endif()
  _standin_module_paths(module_paths "${MY_SLICER_ARGS}")
  add_test(NAME py_${MY_TESTNAME_PREFIX}${test_name}
    COMMAND ${Slicer_LAUNCHER_EXECUTABLE} --no-splash --testing ${MY_SLICER_ARGS} ${module_paths}
    --python-code "import slicer.testing\; slicer.testing.runUnitTest(['${CMAKE_CURRENT_BINARY_DIR}', '${script_dir}'], '${test_name}')")
  set_property(TEST py_${MY_TESTNAME_PREFIX}${test_name} PROPERTY RUN_SERIAL TRUE)
endfunction()

# The extension's module folders, as "--additional-module-paths <dir>...", less those a --disable-*-modules
# argument turns off.
function(_standin_module_paths output_var slicer_args)
  set(paths)
  if(NOT "--disable-modules" IN_LIST slicer_args)
    foreach(kind_and_dir "scripted-loadable|${Slicer_QTSCRIPTEDMODULES_LIB_DIR}" "cli|${Slicer_CLIMODULES_LIB_DIR}"
        "loadable|${Slicer_QTLOADABLEMODULES_LIB_DIR}")
      string(REPLACE "|" ";" kind_and_dir "${kind_and_dir}")
      list(GET kind_and_dir 0 kind)
      list(GET kind_and_dir 1 dir)
      if(NOT "--disable-${kind}-modules" IN_LIST slicer_args)
        list(APPEND paths ${CMAKE_BINARY_DIR}/${dir})
      endif()
    endforeach()
  endif()
  if(paths)
    list(INSERT paths 0 --additional-module-paths)
  endif()
  set(${output_var} ${paths} PARENT_SCOPE)
endfunction()
