# The visual guide as its own static library, attnkit_guide (src/guide; included from the
# top-level CMakeLists.txt after attnkit and attnkit_bench; linked by the CLI and the tests, not
# installed). Besides its sources it
#  1. embeds the chart library (Vega, Vega-Lite, vega-embed minified builds from
#     guide/web/node_modules, installed by scripts/setup.sh with `npm ci`) as a generated .cc, so
#     `attnkit guide` writes a self-contained page with no files to find at run time. Without
#     node_modules it still builds; the guide then refuses to run and says how to fix it.
#  2. records the git commit at build time (re-checked on every build, rewritten only on change).
# No path of the build machine is compiled in: the CLI finds guide/web (for the optional SVG
# export of the charts) at run time, see ChartExportScript in src/guide/guide.cc.
set(ATTNKIT_GUIDE_NODE_MODULES ${PROJECT_SOURCE_DIR}/guide/web/node_modules)
set(ATTNKIT_GUIDE_ASSET_FILES
    ${ATTNKIT_GUIDE_NODE_MODULES}/vega/build/vega.min.js
    ${ATTNKIT_GUIDE_NODE_MODULES}/vega-lite/build/vega-lite.min.js
    ${ATTNKIT_GUIDE_NODE_MODULES}/vega-embed/build/vega-embed.min.js)
set(ATTNKIT_GUIDE_ASSETS_FOUND ON)
foreach(asset ${ATTNKIT_GUIDE_ASSET_FILES})
  if(NOT EXISTS ${asset})
    set(ATTNKIT_GUIDE_ASSETS_FOUND OFF)
  endif()
endforeach()
if(NOT ATTNKIT_GUIDE_ASSETS_FOUND)
  message(STATUS "attnkit guide: chart library not found under ${ATTNKIT_GUIDE_NODE_MODULES} "
                 "(run scripts/setup.sh); `attnkit guide` will refuse to run")
  set(ATTNKIT_GUIDE_ASSET_FILES "")
endif()
string(REPLACE ";" "|" ATTNKIT_GUIDE_ASSET_ARG "${ATTNKIT_GUIDE_ASSET_FILES}")
set(ATTNKIT_GUIDE_ASSETS_CC ${CMAKE_CURRENT_BINARY_DIR}/generated/guide_assets.cc)
add_custom_command(
  OUTPUT ${ATTNKIT_GUIDE_ASSETS_CC}
  COMMAND ${CMAKE_COMMAND} "-DASSETS=${ATTNKIT_GUIDE_ASSET_ARG}" -DOUT=${ATTNKIT_GUIDE_ASSETS_CC}
          -P ${PROJECT_SOURCE_DIR}/cmake/EmbedGuideAssets.cmake
  DEPENDS ${ATTNKIT_GUIDE_ASSET_FILES} ${PROJECT_SOURCE_DIR}/cmake/EmbedGuideAssets.cmake
  COMMENT "Embedding the guide's chart library"
  VERBATIM)

set(ATTNKIT_BUILD_INFO_CC ${CMAKE_CURRENT_BINARY_DIR}/generated/build_info.cc)
add_custom_target(attnkit_build_info
  COMMAND ${CMAKE_COMMAND} -DSOURCE_DIR=${PROJECT_SOURCE_DIR} -DOUT=${ATTNKIT_BUILD_INFO_CC}
          -DBUILD_TYPE=${CMAKE_BUILD_TYPE} -P ${PROJECT_SOURCE_DIR}/cmake/GuideBuildInfo.cmake
  BYPRODUCTS ${ATTNKIT_BUILD_INFO_CC}
  VERBATIM)
file(GLOB ATTNKIT_GUIDE_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/src/guide/*.cc)
add_library(attnkit_guide STATIC ${ATTNKIT_GUIDE_SOURCES} ${ATTNKIT_GUIDE_ASSETS_CC}
                                 ${ATTNKIT_BUILD_INFO_CC})
add_dependencies(attnkit_guide attnkit_build_info)
target_include_directories(attnkit_guide PRIVATE ${PROJECT_SOURCE_DIR}/src ${OpenBLAS_INCLUDE_DIRS})
target_link_libraries(attnkit_guide PUBLIC attnkit_bench attnkit
                                    PRIVATE hwy::hwy nlohmann_json::nlohmann_json attnkit_flags)
