package acesteps.registry;

import io.apicurio.common.apps.config.DynamicConfigPropertyList;
import java.util.List;
import javax.enterprise.inject.Produces;
import javax.inject.Singleton;

/**
 * The index of the properties editable at run time, which the build step of Apicurio's
 * config-index extension would generate (that step is not published on Maven Central; see
 * pom.xml). Empty: every property keeps the value it was started with.
 */
public class DynamicPropertiesList {
    @Produces
    @Singleton
    DynamicConfigPropertyList dynamicConfigPropertyList() {
        return new DynamicConfigPropertyList(List.of());
    }
}
