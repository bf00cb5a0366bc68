# Stand-in for CTK's CMake/ctkMacroCompilePythonScript.cmake, with the same file placement:
#
# - each script (".py" appended when its extension does not contain "py") is copied at build time from
#   SOURCE_DIR/<path> (default: the current source dir) to DESTINATION_DIR/<path>, the relative path kept;
#   an absolute script path keeps its path relative to the current binary dir, as in CTK;
# - each resource is copied the same way;
# - the copied scripts are byte-compiled in place, to "<path>c" beside each script (CTK's generated
#   compile script calls py_compile with that name), with PYTHON_EXECUTABLE; an error is printed, not fatal;
# - the whole DESTINATION_DIR is installed into INSTALL_DIR (with NO_INSTALL_SUBDIR its contents, else the
#   folder itself), so whatever else lies there at install time is installed too, and nothing outside it.
#
# Targets, all built by default: Copy<TARGET_NAME>PythonScriptFiles, Copy<TARGET_NAME>PythonResourceFiles,
# Compile<TARGET_NAME>PythonFiles.

function(ctkMacroCompilePythonScript)
  cmake_parse_arguments(MY "NO_INSTALL_SUBDIR;GLOBAL_TARGET" "TARGET_NAME;SOURCE_DIR;DESTINATION_DIR;INSTALL_DIR"
    "SCRIPTS;RESOURCES" ${ARGN})
  foreach(name TARGET_NAME SCRIPTS DESTINATION_DIR INSTALL_DIR)
    if(NOT DEFINED MY_${name})
      message(FATAL_ERROR "ctkMacroCompilePythonScript: ${name} is mandatory")
    endif()
  endforeach()
  if(NOT DEFINED MY_SOURCE_DIR)
    set(MY_SOURCE_DIR ${CMAKE_CURRENT_SOURCE_DIR})
  endif()
  get_filename_component(MY_SOURCE_DIR ${MY_SOURCE_DIR} REALPATH)
  get_filename_component(MY_DESTINATION_DIR ${MY_DESTINATION_DIR} REALPATH)

  set(scripts)
  foreach(file IN LISTS MY_SCRIPTS)
    get_filename_component(ext ${file} EXT)
    if(NOT "${ext}" MATCHES "py")
      set(file "${file}.py")
    endif()
    list(APPEND scripts ${file})
  endforeach()
  _standin_copy_files(${MY_TARGET_NAME} Script "${MY_SOURCE_DIR}" "${MY_DESTINATION_DIR}" ${scripts})
  if(MY_RESOURCES)
    _standin_copy_files(${MY_TARGET_NAME} Resource "${MY_SOURCE_DIR}" "${MY_DESTINATION_DIR}" ${MY_RESOURCES})
  endif()
  _standin_compile_scripts(${MY_TARGET_NAME} "${_standin_copied_Script}")

  set(directory_to_install ${MY_DESTINATION_DIR})
  if(MY_NO_INSTALL_SUBDIR)
    set(directory_to_install ${MY_DESTINATION_DIR}/)
  endif()
  install(DIRECTORY "${directory_to_install}" DESTINATION "${MY_INSTALL_DIR}" COMPONENT RuntimeLibraries
    USE_SOURCE_PERMISSIONS)
endfunction()

# Copy<target>Python<kind>Files: copy each file from source_dir/<file> to destination_dir/<file> at build time.
# Sets _standin_copied_<kind> in the caller to the copied paths.
function(_standin_copy_files target kind source_dir destination_dir)
  set(copied)
  foreach(file IN LISTS ARGN)
    if(IS_ABSOLUTE ${file})
      set(src ${file})
      file(RELATIVE_PATH file ${CMAKE_CURRENT_BINARY_DIR} ${file})
    else()
      set(src ${source_dir}/${file})
    endif()
    set(tgt ${destination_dir}/${file})
    add_custom_command(OUTPUT ${tgt} DEPENDS ${src} COMMAND ${CMAKE_COMMAND} -E copy ${src} ${tgt}
      COMMENT "Copying python ${kind}: ${file}")
    list(APPEND copied ${tgt})
  endforeach()
  add_custom_target(Copy${target}Python${kind}Files ALL DEPENDS ${copied})
  set(_standin_copied_${kind} ${copied} PARENT_SCOPE)
endfunction()

# Compile<target>PythonFiles: byte-compile the copied scripts where they were copied to.
function(_standin_compile_scripts target scripts)
  if(NOT PYTHON_EXECUTABLE)
    find_package(Python3 REQUIRED COMPONENTS Interpreter)
    set(PYTHON_EXECUTABLE ${Python3_EXECUTABLE})
  endif()
  set(compile_script ${CMAKE_CURRENT_BINARY_DIR}/compile_${target}_python_scripts.py)
  set(stamp ${CMAKE_CURRENT_BINARY_DIR}/python_compile_${target}_complete)
  set(code "import py_compile, sys\n")
  foreach(script IN LISTS scripts)
    string(APPEND code "try:\n    py_compile.compile(r'${script}', r'${script}c', None, True)\n"
      "except py_compile.PyCompileError as err:\n    print('Compiling', r'${script}', '...', err.msg)\n")
  endforeach()
  string(APPEND code "open(r'${stamp}', 'w').write('Done')\n")
  file(WRITE ${compile_script} "${code}")
  add_custom_command(OUTPUT ${stamp} COMMAND ${PYTHON_EXECUTABLE} ${compile_script}
    DEPENDS Copy${target}PythonScriptFiles ${compile_script} COMMENT "Compiling python scripts: ${target}")
  add_custom_target(Compile${target}PythonFiles ALL DEPENDS ${stamp})
endfunction()
