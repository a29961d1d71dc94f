# Warnings for the project's own code: on, and errors. Generated code (protobuf/gRPC stubs) and
# third-party headers (included as SYSTEM) are not held to them.
function(cachesvc_warnings target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor
                              -Wold-style-cast -Wcast-align -Wunused -Woverloaded-virtual
                              -Wnull-dereference -Wimplicit-fallthrough -Werror>
    $<$<COMPILE_LANGUAGE:CUDA>:-Werror=all-warnings -Xcompiler=-Wall,-Wextra,-Werror>)
endfunction()
