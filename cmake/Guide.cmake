# Build steps of the visual guide (included from the top-level CMakeLists.txt after the library):
#  1. embeds the chart library (Vega, Vega-Lite, vega-embed minified builds from
#     guide/web/node_modules, installed by scripts/setup.sh with `npm ci`) into the library as a
#     generated .cc, so `attnkit guide` writes a self-contained page with no files to find at run
#     time. Without node_modules the library still builds; the guide then refuses to run and says
#     how to fix it.
#  2. records the git commit at build time (re-checked on every build, rewritten only on change).
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
target_sources(attnkit PRIVATE ${ATTNKIT_GUIDE_ASSETS_CC} ${ATTNKIT_BUILD_INFO_CC})
add_dependencies(attnkit attnkit_build_info)
target_compile_definitions(attnkit PRIVATE ATTNKIT_GUIDE_WEB_DIR="${PROJECT_SOURCE_DIR}/guide/web")
