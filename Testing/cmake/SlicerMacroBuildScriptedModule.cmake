# Stand-in for Slicer's CMake/SlicerMacroBuildScriptedModule.cmake: every listed script and resource must exist
# (a configure error otherwise), then ctkMacroCompilePythonScript copies them to
# <build>/<Slicer_QTSCRIPTEDMODULES_LIB_DIR>[/<module folder> WITH_SUBDIR] and installs that folder into
# Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR. WITH_GENERIC_TESTS registers py_nomainwindow_qSlicer<NAME>ModuleGenericTest.

function(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(MY_SLICER "WITH_GENERIC_TESTS;WITH_SUBDIR;VERBOSE" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  if(MY_SLICER_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "Unknown keywords given to slicerMacroBuildScriptedModule(): \"${MY_SLICER_UNPARSED_ARGUMENTS}\"")
  endif()
  if(NOT DEFINED MY_SLICER_NAME)
    message(FATAL_ERROR "NAME is mandatory")
  endif()
  foreach(file IN LISTS MY_SLICER_SCRIPTS MY_SLICER_RESOURCES)
    set(path ${file})
    if(NOT IS_ABSOLUTE ${file})
      set(path ${CMAKE_CURRENT_SOURCE_DIR}/${file})
    endif()
    if(NOT EXISTS ${path} AND NOT EXISTS ${path}.py)
      message(FATAL_ERROR "slicerMacroBuildScriptedModule given nonexistent file or directory '${file}'")
    endif()
  endforeach()
  if(NOT Slicer_USE_PYTHONQT)
    message(FATAL_ERROR "Attempting to build the Python scripted module '${MY_SLICER_NAME}' when Slicer_USE_PYTHONQT is OFF")
  endif()

  set(no_install_subdir NO_INSTALL_SUBDIR)
  set(subdir "")
  if(MY_SLICER_WITH_SUBDIR)
    get_filename_component(subdir ${CMAKE_CURRENT_SOURCE_DIR} NAME)
    set(subdir "/${subdir}")
    set(no_install_subdir "")
  endif()
  ctkMacroCompilePythonScript(
    TARGET_NAME ${MY_SLICER_NAME}
    SCRIPTS "${MY_SLICER_SCRIPTS}"
    RESOURCES "${MY_SLICER_RESOURCES}"
    DESTINATION_DIR ${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}${subdir}
    INSTALL_DIR ${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}
    ${no_install_subdir}
    )
  if(BUILD_TESTING AND MY_SLICER_WITH_GENERIC_TESTS)
    slicer_add_python_unittest(
      SCRIPT qSlicer${MY_SLICER_NAME}ModuleGenericTest.py
      SLICER_ARGS --no-main-window --disable-cli-modules
                  --additional-module-path ${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}
      TESTNAME_PREFIX nomainwindow_
      )
  endif()
endfunction()
